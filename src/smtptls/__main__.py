from smtptls.cli.main import main

raise SystemExit(main())
