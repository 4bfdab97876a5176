from testenv_services.backend.app import main

raise SystemExit(main())
