from testenv_services.frontend.app import main

raise SystemExit(main())
