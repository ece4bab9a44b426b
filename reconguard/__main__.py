from reconguard.cli import main

main()
