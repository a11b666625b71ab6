"""``python -m atoken``: the ``atoken`` command (:func:`atoken.cli.main`)."""

from atoken.cli import main

if __name__ == "__main__":
    main()
