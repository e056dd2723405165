from modelfleet.cli.main import main

main()
