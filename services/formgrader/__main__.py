from .app import FormGrader

FormGrader.main()
