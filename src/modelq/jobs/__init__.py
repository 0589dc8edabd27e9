"""Jobs: records (SQLAlchemy), the store, artifacts and the operations on them."""
