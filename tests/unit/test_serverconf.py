"""How usagi-server combines its options, their environment variables and a configuration file:
options win, then variables, then the file, then the defaults; --host/--port replace that part of
each listener of the file."""
from __future__ import annotations

from usagi.cli import server, serverconf
from usagi.config import rabbitconf as rc


def resolve(argv, text, monkeypatch, env=None):
    for k in list(__import__("os").environ):
        if k.startswith("USAGI_") or k == "RABBITMQ_CONFIG_FILE":
            monkeypatch.delenv(k)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    args = server.build_parser().parse_args(argv)
    explicit = serverconf.explicit_options(server.build_parser, argv)
    args.config_used = "rabbitmq.conf" if text is not None else None
    if text is not None:
        serverconf.apply(args, rc.interpret(rc.parse_text(text)), explicit)
    return args, explicit


def test_options_then_variables_then_the_file(monkeypatch):
    args, _ = resolve(["--heartbeat", "7"], "heartbeat = 20\nchannel_max = 50\nframe_max = 8192\n", monkeypatch,
                      env={"USAGI_CHANNEL_MAX": "9"})
    assert (args.heartbeat, args.channel_max, args.frame_max) == (7, 9, 8192)


def test_listeners(monkeypatch):
    text = "listeners.tcp.a = 127.0.0.1:5673\nlisteners.tcp.b = ::1:5673\n"
    args, ex = resolve([], text, monkeypatch)
    assert serverconf.listeners(args, ex) == [("amqp", "127.0.0.1", 5673), ("amqp", "::1", 5673)]
    args, ex = resolve(["--port", "6000"], text, monkeypatch)
    assert serverconf.listeners(args, ex) == [("amqp", "127.0.0.1", 6000), ("amqp", "::1", 6000)]
    args, ex = resolve(["--host", "10.0.0.1"], text, monkeypatch)
    assert serverconf.listeners(args, ex) == [("amqp", "10.0.0.1", 5673)]
    args, ex = resolve([], None, monkeypatch)            # no file: the options' defaults
    assert serverconf.listeners(args, ex) == [("amqp", None, 5672)]


def test_tls_listeners(monkeypatch):
    tls = "ssl_options.certfile = c.pem\nssl_options.keyfile = k.pem\n"
    args, ex = resolve([], tls, monkeypatch)                # certificates, no listeners.ssl: none
    assert serverconf.listeners(args, ex) == [("amqp", None, 5672)]
    args, ex = resolve([], tls + "listeners.ssl.1 = 5999\n", monkeypatch)
    assert serverconf.listeners(args, ex)[1:] == [("amqps", None, 5999)]
    args, ex = resolve(["--tls-port", "6001"], tls, monkeypatch)
    assert serverconf.listeners(args, ex)[1:] == [("amqps", None, 6001)]
    args, ex = resolve(["--tls-cert", "c.pem"], None, monkeypatch)     # no file: AMQPS on 5671
    assert serverconf.listeners(args, ex)[1:] == [("amqps", None, 5671)]


def test_sizes_take_units_on_the_command_line(monkeypatch):
    args, _ = resolve(["--disk-free-limit", "1GB", "--vm-memory-high-watermark-absolute", "2GiB",
                       "--frame-max", "128KB", "--max-message-size", "64MiB"], None, monkeypatch)
    assert (args.disk_free_limit, args.vm_memory_high_watermark_absolute, args.frame_max,
            args.max_message_size) == (10 ** 9, 2 * 2 ** 30, 131072, 64 * 2 ** 20)


def test_memory_and_disk_limits_from_the_file(monkeypatch):
    args, _ = resolve([], "total_memory_available_override_value = 8GB\nvm_memory_high_watermark.relative = 0.5\n"
                          "disk_free_limit.relative = 1.5\n", monkeypatch)
    assert args.vm_memory_high_watermark_absolute == 4 * 10 ** 9 and args.disk_free_limit == 12 * 10 ** 9
    args, _ = resolve(["--vm-memory-high-watermark", "0.3"], "vm_memory_high_watermark.absolute = 1GB\n",
                      monkeypatch)
    assert args.vm_memory_high_watermark == 0.3 and args.vm_memory_high_watermark_absolute == 0
