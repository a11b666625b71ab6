"""``python -m atoken.cli``: the ``atoken`` command (torchrun starts each worker of ``atoken
train --nproc N`` as ``-m atoken.cli train``, :mod:`atoken.cli.distributed`)."""

from atoken.cli import main

if __name__ == "__main__":
    main()
