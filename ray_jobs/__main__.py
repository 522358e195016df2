from ray_jobs.cli import main

raise SystemExit(main())
