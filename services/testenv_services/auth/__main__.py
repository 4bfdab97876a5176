from testenv_services.auth.app import main

raise SystemExit(main())
