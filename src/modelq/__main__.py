from modelq.cli import main

main()
