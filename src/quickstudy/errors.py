"""The one exception type users see. Torch-free, so that :mod:`quickstudy.labels` can use it."""


class QuickstudyError(Exception):
    """A problem with the user's input or files, stated in one line that names the file and the problem.

    The command line prints ``error: <message>`` and exits with status 2, without a traceback.
    """
