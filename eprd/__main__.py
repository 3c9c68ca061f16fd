if __name__ == "__main__":
    # Spawned processes (the loaders, the watch process) import this module as __mp_main__:
    # they import only what they run, not the whole command line.
    from eprd.cli.main import main

    raise SystemExit(main())
