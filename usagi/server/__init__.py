from .app import Server, serve

__all__ = ["Server", "serve"]
