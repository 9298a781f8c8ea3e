"""Functions the worker is allowed to run."""


def hello_task(who="world"):
    print(f"Hello {who}")
