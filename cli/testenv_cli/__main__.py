from testenv_cli import main

main()
