from .app import Stats

Stats.main()
