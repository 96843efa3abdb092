from banger_core.daemon.main import main

main()
