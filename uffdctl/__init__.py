"""uffdctl: what the running kernel's userfaultfd can do, minor faults as they happen, and which
regions of a live process are registered."""

__version__ = "0.1.0"
