from .app import Culler

Culler.main()
