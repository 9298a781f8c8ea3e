"""rabbitmq.conf as Usagi reads it: the syntax (cuttlefish's), RabbitMQ's names and value syntax,
sizes with units, and errors that name the file, the line and what is wrong."""
from __future__ import annotations

import pytest

from usagi.config import rabbitconf as rc
from usagi.config.units import parse_bytesize, parse_information_unit


def conf(text: str, name: str = "rabbitmq.conf") -> rc.Settings:
    return rc.interpret(rc.parse_text(text, name))


def error_of(text: str) -> str:
    with pytest.raises(rc.ConfigError) as ei:
        conf(text)
    return str(ei.value)


# ----------------------------------------------------------------------------------- units

@pytest.mark.parametrize("text,value", [
    ("500", 500), ("1GB", 10 ** 9), ("1gb", 10 ** 9), ("1G", 10 ** 9), ("500MB", 500 * 10 ** 6),
    ("50000kB", 50 * 10 ** 6), ("1k", 1000), ("2TB", 2 * 10 ** 12), ("1GiB", 2 ** 30), ("1Gi", 2 ** 30),
    ("1gib", 2 ** 30), ("512MiB", 512 * 2 ** 20), ("4KiB", 4096), ("1PiB", 2 ** 50), (" 3MB ", 3 * 10 ** 6),
])
def test_information_units_as_rabbitmq_reads_them(text, value):
    assert parse_information_unit(text) == value


@pytest.mark.parametrize("text", ["", "GB", "1.5GB", "-1", "1 XB", "1GBB", "10 gigabytes"])
def test_bad_information_units_are_refused(text):
    with pytest.raises(ValueError):
        parse_information_unit(text)


def test_bytesize_is_binary():
    assert parse_bytesize("128KB") == 131072
    assert parse_bytesize("1mb") == 2 ** 20
    assert parse_bytesize("4096") == 4096
    with pytest.raises(ValueError):
        parse_bytesize("1GiB")


# ----------------------------------------------------------------------------------- syntax

def test_syntax_comments_quotes_and_escaped_dots():
    entries = rc.parse_text(
        "# a comment\n"
        "\n"
        "   heartbeat   =   30   # trailing comment\n"
        "default_pass = 'se#cret w'\n"
        "loopback_users.my\\.user = true\r\n"
        "default_user=bob\n", "x.conf")
    got = [(e.key, e.value, e.line) for e in entries]
    assert got == [("heartbeat", "30", 3), ("default_pass", "se#cret w", 4),
                   ("loopback_users.my\\.user", "true", 5), ("default_user", "bob", 6)]
    assert entries[2].words == ("loopback_users", "my.user")


@pytest.mark.parametrize("text,line,reason", [
    ("heartbeat = 30\nthis is not a setting\n", 2, "expected 'key = value'"),
    ("heartbeat =\n", 1, "no value"),
    ("default_pass = 'unterminated\n", 1, "no closing quote"),
    ("[{rabbit, [{tcp_listeners, [5672]}]}].\n", 1, "Erlang-term format"),
])
def test_syntax_errors_name_the_line(text, line, reason):
    msg = error_of(text)
    assert msg.startswith(f"rabbitmq.conf:{line}: "), msg
    assert reason in msg


def test_the_last_line_for_a_key_wins():
    assert conf("heartbeat = 10\nheartbeat = 20\n").get("heartbeat") == 20


def test_include_reads_other_files_in_order(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-a.conf").write_text("heartbeat = 11\n")
    (tmp_path / "conf.d" / "20-b.conf").write_text("heartbeat = 22\nchannel_max = 9\n")
    main = tmp_path / "rabbitmq.conf"
    main.write_text("heartbeat = 5\ninclude conf.d/*.conf\nframe_max = 8192\n")
    s = rc.load(str(main))
    assert s.get("heartbeat") == 22 and s.get("channel_max") == 9 and s.get("frame_max") == 8192
    (tmp_path / "conf.d" / "20-b.conf").write_text("include ../rabbitmq.conf\n")
    with pytest.raises(rc.ConfigError) as ei:
        rc.load(str(main))
    assert "20-b.conf:1: " in str(ei.value) and "cycle" in str(ei.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(rc.ConfigError) as ei:
        rc.load(str(tmp_path / "nope.conf"))
    assert str(ei.value).startswith(str(tmp_path / "nope.conf") + ": cannot read")


def test_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "r.conf"
    p.write_bytes(b"heartbeat = 1\ndefault_user = \xff\xfe\n")
    with pytest.raises(rc.ConfigError) as ei:
        rc.load(str(p))
    assert str(ei.value) == f"{p}:2: not UTF-8 text"


# ----------------------------------------------------------------------------------- meaning

TYPICAL = """
listeners.tcp.default = 5672
listeners.tcp.local   = 127.0.0.1:5673
listeners.tcp.v6      = :::5674
listeners.ssl.default = 5671
ssl_options.cacertfile = /etc/usagi/ca.pem
ssl_options.certfile   = /etc/usagi/server.pem
ssl_options.keyfile    = /etc/usagi/server.key
ssl_options.verify     = verify_peer
ssl_options.fail_if_no_peer_cert = true
ssl_options.versions.1 = tlsv1.2
default_user = admin
default_pass = s3cret
default_vhost = prod
default_permissions.configure = ^app-.*
default_user_tags.administrator = true
default_user_tags.monitoring = true
loopback_users.guest = false
vm_memory_high_watermark.absolute = 2GiB
disk_free_limit.absolute = 1GB
heartbeat = 30
frame_max = 128KB
channel_max = 100
max_message_size = 1048576
consumer_timeout = 900000
management.tcp.port = 15673
management.tcp.ip = 127.0.0.1
prometheus.tcp.port = 15693
load_definitions = /etc/usagi/definitions.json
log.file = /var/log/usagi/usagi.log
log.file.level = debug
log.file.rotation.size = 10485760
log.file.rotation.count = 5
log.file.formatter = json
log.console = true
log.console.level = warning
log.connection.level = debug
num_acceptors.tcp = 10
collect_statistics_interval = 10000
"""


def test_a_typical_file():
    s = conf(TYPICAL)
    v = s.values
    assert v["amqp_listeners"] == [(None, 5672), ("127.0.0.1", 5673), ("::", 5674)]
    assert v["amqps_listeners"] == [(None, 5671)]
    assert (v["tls_cert"], v["tls_key"], v["tls_ca"], v["tls_verify"]) == \
        ("/etc/usagi/server.pem", "/etc/usagi/server.key", "/etc/usagi/ca.pem", "require")
    assert (v["default_user"], v["default_pass"], v["default_vhost"]) == ("admin", "s3cret", "prod")
    assert v["default_permissions"] == ("^app-.*", ".*", ".*")
    assert v["default_user_tags"] == ["administrator", "monitoring"]
    assert v["loopback_users"] == ()
    assert v["vm_memory_high_watermark_absolute"] == 2 ** 30 * 2
    assert v["disk_free_limit"] == 10 ** 9
    assert (v["heartbeat"], v["frame_max"], v["channel_max"], v["max_message_size"]) == (30, 131072, 100, 1048576)
    assert v["consumer_timeout"] == 900000
    assert (v["management_port"], v["management_host"], v["metrics_port"]) == (15673, "127.0.0.1", 15693)
    assert v["load_definitions"] == "/etc/usagi/definitions.json"
    assert (v["log_file"], v["log_file_level"], v["log_file_rotation_size"], v["log_file_rotation_count"],
            v["log_file_formatter"], v["log_console"], v["log_console_level"]) == \
        ("/var/log/usagi/usagi.log", "debug", 10485760, 5, "json", True, "warning")
    assert v["log_categories"] == {"connection": "debug"}
    assert v["collect_statistics_interval"] == 10000
    # where each value came from, for later errors
    assert s.where("heartbeat") == "rabbitmq.conf:21"
    # RabbitMQ's settings that do not apply are accepted, with a warning naming them
    warned = {e.key for e, _text in s.warnings}
    assert warned == {"ssl_options.versions.1", "num_acceptors.tcp"}


def test_tls_verify_peer_without_fail_if_no_peer_cert_is_optional():
    s = conf("ssl_options.certfile = a\nssl_options.cacertfile = c\nssl_options.verify = verify_peer\n")
    assert s.get("tls_verify") == "peer"
    assert conf("ssl_options.certfile = a\nssl_options.verify = verify_none\n").get("tls_verify") == "none"


def test_listeners_none_and_loopback_users_none():
    s = conf("listeners.tcp = none\nlisteners.ssl.1 = 127.0.0.1:5671\nssl_options.certfile = c\n"
             "loopback_users = none\n")
    assert s.get("amqp_listeners") == [] and s.get("amqps_listeners") == [("127.0.0.1", 5671)]
    assert s.get("loopback_users") == ()
    assert conf("loopback_users.guest = true\nloopback_users.ops = true\n").get("loopback_users") == \
        ("guest", "ops")


def test_relative_limits_and_precedence():
    s = conf("vm_memory_high_watermark.relative = 0.6\ndisk_free_limit.relative = 1.5\n")
    assert s.get("vm_memory_high_watermark") == 0.6 and s.get("disk_free_limit_relative") == 1.5
    s = conf("vm_memory_high_watermark.relative = 0.6\nvm_memory_high_watermark.absolute = 1GB\n")
    assert s.get("vm_memory_high_watermark_absolute") == 10 ** 9 and "vm_memory_high_watermark" not in s
    assert any("has precedence" in t for _e, t in s.warnings)
    # 0, as in RabbitMQ: the memory alarm is set at once and every publisher is blocked
    assert conf("vm_memory_high_watermark.relative = 0\n").get("vm_memory_high_watermark") == 0.0


def test_infinity_and_aliases():
    s = conf("max_connections = infinity\nmax_channels_per_connection = 16\nhandshake_timeout = 5000\n")
    assert s.get("max_connections") == -1 and s.get("channel_max") == 16 and s.get("handshake_timeout") == 5000
    assert conf("connection_max = 10\n").get("max_connections") == 10


def test_management_over_https():
    s = conf("management.ssl.port = 15671\nmanagement.ssl.certfile = c.pem\nmanagement.ssl.keyfile = k.pem\n")
    assert (s.get("management_port"), s.get("management_tls_cert"), s.get("management_tls_key")) == \
        (15671, "c.pem", "k.pem")


def test_auth_mechanisms_and_internal_backend():
    s = conf("auth_mechanisms.1 = PLAIN\nauth_mechanisms.2 = AMQPLAIN\nauth_backends.1 = internal\n")
    assert s.get("auth_mechanisms") == ("PLAIN", "AMQPLAIN")


@pytest.mark.parametrize("text,line,reason", [
    ("heartbeat = 10\nheartbeet = 10\n", 2, "unknown setting 'heartbeet' (did you mean 'heartbeat'?)"),
    ("frobnicate.level = 3\n", 1, "unknown setting 'frobnicate.level'"),
    ("heartbeat = ten\n", 1, "heartbeat: invalid value 'ten': expected an integer"),
    ("heartbeat = 70000\n", 1, "must be between 0 and 65535"),
    ("disk_free_limit.absolute = 1XB\n", 1, "unknown unit 'XB'"),
    ("vm_memory_high_watermark.relative = 1.5\n", 1, "must be at least 0 and at most 1.0"),
    ("vm_memory_high_watermark.relative = -0.1\n", 1, "must be at least 0"),
    ("listeners.tcp.default = 70000\n", 1, "must be between 0 and 65535"),
    ("listeners.tcp.default = 0.0.0.0:70000\n", 1, "out of range"),
    ("listeners.tcp.default = localhost:5672\n", 1, "expected a port"),
    ("ssl_options.verify = verify_everything\n", 1, "expected one of verify_peer, verify_none"),
    ("log.file.level = loud\n", 1, "expected one of debug, info"),
    ("max_message_size = 0\n", 1, "must be between 1 and 536870912"),
    ("frame_max = 1024\n", 1, "must be between 4096"),
    ("default_permissions.read = (\n", 1, "not a valid regular expression"),
    ("auth_backends.1 = ldap\n", 1, "internal user database only"),
    ("auth_mechanisms.1 = SCRAM\n", 1, "Usagi offers PLAIN, AMQPLAIN and EXTERNAL"),
    ("mqtt.listeners.tcp.default = 1883\n", 1, "a setting of rabbitmq_mqtt, which Usagi does not have"),
    ("management.path_prefix = /rmq\n", 1, "not supported by Usagi"),
    ("default_users.alice.password = x\n", 1, "not supported by Usagi"),
    ("ssl_options.crl_check = true\n", 1, "revocation"),
    ("proxy_protocol = true\n", 1, "not supported by Usagi"),
    ("listeners.ssl.default = 5671\n", 1, "needs ssl_options.certfile"),
    ("ssl_options.certfile = c\nssl_options.verify = verify_peer\n", 2, "needs ssl_options.cacertfile"),
    ("management.tcp.port = 1\nmanagement.ssl.port = 2\nmanagement.ssl.certfile = c\n", 2, "not both"),
    ("prometheus.path = /m\n", 1, "served at /metrics"),
    ("definitions.import_backend = https\n", 1, "not supported by Usagi"),
    # digits of other scripts and Python's literal forms are not numbers to RabbitMQ
    ("heartbeat = \u0663\n", 1, "expected an integer"),
    ("heartbeat = \uff11\uff12\n", 1, "expected an integer"),
    ("channel_max = 1_000\n", 1, "expected an integer"),
    ("listeners.tcp.default = \u0665\u0666\u0667\u0662\n", 1, "expected a port"),
    ("listeners.tcp.default = 0.0.0.0:\u0665\u0666\u0667\u0662\n", 1, "expected a port"),
    ("vm_memory_high_watermark.relative = \u0660.5\n", 1, "expected a number"),
    ("disk_free_limit.relative = inf\n", 1, "expected a number"),
    ("disk_free_limit.relative = 1e300\n", 1, "at most 1000"),
    ("vm_memory_high_watermark.absolute = 0\n", 1, "must be at least 1 byte"),
    # lines end at \n only: a vertical tab or U+2028 inside a line is not a line break
    ("heartbeat = 5\x0bframe_max = 4096\n", 1, "invalid value '5\\x0bframe_max = 4096'"),
    ("heartbeat = 5\u2028frame_max = 4096\n", 1, "heartbeat: invalid value"),
])
def test_bad_files_name_the_line_and_the_reason(text, line, reason):
    msg = error_of(text)
    assert msg.startswith(f"rabbitmq.conf:{line}: "), msg
    assert reason in msg, msg


def test_paths_are_checked_at_their_line(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    s = conf(f"ssl_options.certfile = {cert}\nssl_options.keyfile = {tmp_path / 'missing.key'}\n")
    with pytest.raises(rc.ConfigError) as ei:
        rc.check_paths(s)
    assert str(ei.value).startswith("rabbitmq.conf:2: ssl_options.keyfile:")
    s = conf(f"load_definitions = {tmp_path / 'nope.json'}\n")
    with pytest.raises(rc.ConfigError) as ei:
        rc.check_paths(s)
    assert "rabbitmq.conf:1: load_definitions" in str(ei.value)


def test_every_applied_key_has_a_translation():
    # each key of the applied table, given a valid value, ends up somewhere (or is a known pair)
    sample = {"_listener": "5672", "_port": "1", "_ip": "127.0.0.1", "_bool": "true", "_string": "x",
              "_info_unit": "1GB", "_regex": ".*", "_level": "info"}
    for key, conv in rc.APPLIED.items():
        name = getattr(conv, "__name__", "")
        value = sample.get(name)
        if value is None:
            continue
        k = key.replace("$", "default")
        if key.startswith("auth_backends"):
            value = "internal"
        if key.startswith("auth_mechanisms"):
            value = "PLAIN"
        if key == "prometheus.path":
            value = "/metrics"
        if key == "definitions.import_backend":
            value = "local_filesystem"
        if key == "ssl_options.fail_if_no_peer_cert":
            value = "false"
        text = f"{k} = {value}\n"
        if k.startswith(("listeners.ssl", "ssl_options.", "management.ssl")):
            text += "ssl_options.certfile = c\nssl_options.cacertfile = a\nmanagement.ssl.certfile = c\n"
        if k in ("management.listener.ssl", "prometheus.authentication.enabled", "proxy_protocol"):
            continue        # true is refused with a reason (tested above)
        s = conf(text)
        assert s.values or s.warnings or k.startswith(("auth_backends", "definitions.import_backend", "prometheus.path")), k


def test_the_example_file_in_the_repository_is_valid():
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    s = rc.load(os.path.join(root, "packaging", "rabbitmq.conf"))
    assert s.warnings == []
    assert s.get("amqp_listeners") == [(None, 5672)] and s.get("disk_free_limit") == 10 ** 9
    assert s.get("log_file") == "/var/log/usagi/usagi.log" and s.get("log_console") is False


def test_the_readme_example_is_valid():
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "README.md")) as f:
        block = re.search(r"```ini\n(.*?)```", f.read(), re.S).group(1)
    s = conf(block, "README.md")
    assert s.warnings == [] and s.get("tls_verify") == "require" and s.get("default_pass").endswith("# with a hash")


def test_error_messages_quote_values_bounded_and_escaped():
    msg = error_of("heartbeat = " + "9" * 100_000 + "x\n")
    assert msg.startswith("rabbitmq.conf:1: heartbeat: invalid value '999") and len(msg) < 400, len(msg)
    msg = error_of("a" * 1_000_000 + " = 1\n")
    assert msg.startswith("rabbitmq.conf:1: unknown setting 'aaa") and len(msg) < 400, len(msg)
    assert "\r" not in error_of("heartbeat = 5\rframe_max = 4096\n")


def test_a_line_number_counts_newlines_only(tmp_path):
    # \x0c (form feed) and \x85 are line breaks to str.splitlines(), not to an editor or RabbitMQ
    msg = error_of("# a \x0c comment\n# \x85 another\nheartbeat = x\n")
    assert msg.startswith("rabbitmq.conf:3: "), msg


def test_include_of_a_directory_is_refused(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("heartbeat = 11\n")
    main = tmp_path / "rabbitmq.conf"
    main.write_text("channel_max = 5\ninclude conf.d\n")
    with pytest.raises(rc.ConfigError) as ei:
        rc.load(str(main))
    assert str(ei.value).startswith(f"{main}:2: include conf.d: is a directory"), ei.value


def test_a_file_larger_than_the_bound_is_refused_not_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(rc, "MAX_BYTES", 64)
    main = tmp_path / "rabbitmq.conf"
    main.write_text("heartbeat = 10\n" + "# " + "x" * 100 + "\nheartbeat = 20\n")
    with pytest.raises(rc.ConfigError) as ei:
        rc.load(str(main))
    assert str(ei.value) == f"{main}: larger than 64 bytes"
