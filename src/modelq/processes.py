"""Child processes that modelq starts (``modelq up``'s workers, one worker per GPU)."""

from __future__ import annotations


def die_with_parent() -> None:
    """In a child (``preexec_fn``): get SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    except (OSError, AttributeError):
        pass  # not Linux: the parent still stops its children on every exit it gets to handle
