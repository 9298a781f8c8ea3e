"""usagictl and usagi-diagnostics: the rabbitmqctl and rabbitmq-diagnostics commands operators use,
with rabbitmqctl's output and exit codes, run for real against a management API.

Expected texts are what rabbitmqctl / rabbitmq-diagnostics 3.10 print for the same command. Three
kinds of tests:

* against the `mgmt` fixture (a Usagi server of the test's own, or the API behind USAGI_TEST_MGMT_URL);
* Usagi and RabbitMQ side by side: the same scenario through usagictl against a Usagi server of the
  test's own and against a RabbitMQ management API (USAGI_TEST_RABBITMQ_MGMT_URL, by default
  http://guest:guest@127.0.0.1:15682; skipped when none answers), transcripts compared;
* usagictl against RabbitMQ's management API and rabbitmqctl against the same node, outputs compared
  (USAGI_TEST_MGMT_URL and USAGI_TEST_RABBITMQCTL set, see ctlutil.run_rabbitmqctl).

Everything made has a unique name and is deleted afterwards. Commands that would change a shared
RabbitMQ node for everyone (reset, limits, log level) run only against a Usagi server of the test's own.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from ctlutil import Mgmt, RABBITMQCTL, _wait_for_mgmt, run_ctl, run_diag, run_rabbitmqctl, unique

pika = pytest.importorskip("pika")

HERE = os.path.dirname(os.path.abspath(__file__))
NOWHERE = "http://guest:guest@127.0.0.1:1"      # arguments are checked before the node is asked


def lines(text: str) -> list[str]:
    return text.splitlines()


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def poll(fn, pred, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        r = fn()
        if pred(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.3)


def usage_error(cmd: str, args: list[str], message: str, prog: str = "usagictl",
                prefix: str = "Error (argument validation): ") -> str:
    return f"{prefix}{message}\nArguments given:\n\t{' '.join(args)}\n\nUsage\n\n{prog} [--node <node>] " \
           f"[--longnames] [--quiet] {cmd}"


# --------------------------------------------------------------------------- argument checks (no broker)

@pytest.mark.parametrize("args,code,message", [
    (["set_vm_memory_high_watermark", "1.5"], 65,
     "Bad argument: The threshold should be a fraction between 0.0 and 1.0"),
    (["set_vm_memory_high_watermark", "abc"], 65, "Bad argument."),
    (["set_vm_memory_high_watermark", ".5"], 65, "Bad argument."),
    (["set_vm_memory_high_watermark", "absolute", "2gb"], 65, "Bad argument: Invalid units."),
    (["set_vm_memory_high_watermark", "absolute", "1.5GB"], 65, "Bad argument: The threshold should be an integer."),
    (["set_vm_memory_high_watermark", "absolute", "abc"], 65, "Bad argument."),
    (["set_vm_memory_high_watermark", "absolute"], 64, "not enough arguments."),
    (["set_vm_memory_high_watermark"], 64, "not enough arguments."),
    (["set_vm_memory_high_watermark", "0.5", "x"], 64, "too many arguments."),
    (["set_vm_memory_high_watermark", "absolute", "5", "x"], 64, "too many arguments."),
    (["set_disk_free_limit", "1.5"], 65, "Bad argument."),
    (["set_disk_free_limit", "1TB"], 65, "Bad argument."),
    (["set_disk_free_limit", "1.5GB"], 65, "Bad argument."),
    (["set_disk_free_limit", "abc"], 65, "Bad argument."),
    (["set_disk_free_limit", "mem_relative", "abc"], 65, "Bad argument."),
    (["set_disk_free_limit", "mem_relative", "-1"], 65, "Bad argument."),
    (["set_disk_free_limit", "mem_relative"], 64, "not enough arguments."),
    (["set_disk_free_limit"], 64, "not enough arguments."),
    (["set_disk_free_limit", "1", "2"], 64, "too many arguments."),
    (["list_feature_flags", "bogus"], 64, "Info key(s) bogus are not supported"),
    (["list_unresponsive_queues", "bogus"], 64, "Info key(s) bogus are not supported"),
    (["set_topic_permissions", "u", "x", "w"], 64, "not enough arguments."),
    (["clear_topic_permissions"], 64, "not enough arguments."),
    (["set_parameter", "c", "n"], 64, "not enough arguments."),
    (["hash_password", ""], 65, "Bad argument: password cannot be an empty string"),
    # digits are ASCII digits (rabbitmqctl refuses these; Python's int() would take them)
    (["set_disk_free_limit", "\u0663GB"], 65, "Bad argument."),
    (["set_vm_memory_high_watermark", "\u0660.\u0665"], 65, "Bad argument."),
    (["add_user", "", "secret"], 65, "Bad argument: user cannot be an empty string"),
    (["list_unresponsive_queues", "--queue-timeout", "abc"], 64,
     "Invalid options for this command:\n--queue-timeout : abc"),
    # a timeout the socket layer cannot take (was a traceback)
    (["--timeout", "nan", "list_queues"], 64, "Bad argument: --timeout must be a positive number"),
    (["--timeout", "inf", "list_queues"], 64, "Bad argument: --timeout must be a positive number"),
    (["--timeout", "1e400", "list_queues"], 64, "Bad argument: --timeout must be a positive number"),
])
def test_argument_validation(args, code, message):
    r = run_ctl(NOWHERE, *args)
    assert (r.returncode, r.stdout) == (code, ""), r.stderr
    cmd = args[2] if args[0].startswith("--") else args[0]
    assert r.stderr.startswith(usage_error(cmd, args, message)), r.stderr


def test_diagnostics_argument_validation():
    r = run_diag(NOWHERE, "memory_breakdown", "extra")
    assert r.returncode == 64
    assert r.stderr.startswith(usage_error("memory_breakdown", ["memory_breakdown", "extra"], "too many arguments.",
                                           prog="usagi-diagnostics"))
    r = run_diag(NOWHERE, "log_tail", "-X")
    assert r.returncode == 64 and "Invalid options for this command:\n-X : " in r.stderr
    r = run_diag(NOWHERE, "no_such_command")
    assert r.returncode == 64 and r.stderr.startswith("\nCommand 'no_such_command' not found. \n")


def test_hash_password_is_rabbitmqs_sha256():
    """The hash (base64 of a 4-byte salt and SHA-256(salt + password)) logs in where a user is
    created with it: checked against the password-hash code the broker uses."""
    from usagi.auth.passwords import check_password
    r = run_ctl(NOWHERE, "hash_password", "s3cret")
    assert r.returncode == 0, r.stderr
    banner, h = lines(r.stdout)
    assert banner == "Will hash password s3cret"
    assert check_password("s3cret", h) and not check_password("other", h)
    r = run_ctl(NOWHERE, "hash_password", "-q", "s3cret")
    assert len(lines(r.stdout)) == 1 and check_password("s3cret", r.stdout.strip())
    r = run_ctl(NOWHERE, "hash_password", input="from-stdin\n")
    assert lines(r.stdout)[0] == "Will hash provided password"
    assert check_password("from-stdin", lines(r.stdout)[1])


def test_console_scripts():
    from usagi.cli import diagnostics
    with open(os.path.join(HERE, "..", "..", "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    assert 'usagi-diagnostics = "usagi.cli.diagnostics:main"' in text
    assert diagnostics.main(["version"]) == 0
    r = run_diag(None, "help")
    assert r.returncode == 0
    out = r.stdout
    for name in ("ping", "status", "check_running", "check_local_alarms", "check_port_connectivity",
                 "check_virtual_hosts", "listeners", "alarms", "memory_breakdown", "log_tail", "list_queues"):
        assert f"   {name} " in out, name
    assert "usagi-diagnostics [--url <url>]" in out
    assert "   add_user " not in out             # usagictl's, not a diagnostics command
    r = run_ctl(None, "help", "set_disk_free_limit")
    assert "usagictl [--node <node>] [--longnames] [--quiet] set_disk_free_limit <disk_limit> | mem_relative " \
           "<fraction>" in r.stdout
    assert "mem_relative <fraction>\n\tNew limit as a fraction of total memory reported by the OS" in r.stdout


# --------------------------------------------------------------------------- scenarios (Usagi or RabbitMQ)

def norm(m: Mgmt, text: str, names: dict) -> str:
    for real, placeholder in names.items():
        text = text.replace(real, placeholder)
    return text.replace(m.node(), "{N}")


def transcript(m: Mgmt, steps: list[list[str]], names: dict, tool=None) -> list:
    """Run each step; (arguments, exit code, stdout, stderr) with the names made up for the run
    replaced by placeholders, so that runs against two brokers compare."""
    out = []
    for args in steps:
        r = (tool or m.ctl)(*args)
        out.append((norm(m, " ".join(args), names), r.returncode, norm(m, r.stdout, names),
                    norm(m, r.stderr, names)))
    return out


def topic_permission_steps(v, u, nv) -> list:
    return [
        ["set_topic_permissions", "-p", v, u, "amq.topic", "^a", "^b"],
        ["set_topic_permissions", "-p", v, u, "x2", "^c", "^d", "--formatter", "json"],
        ["list_topic_permissions", "-p", v],
        ["list_topic_permissions", "-p", v, "-s"],
        ["list_user_topic_permissions", u],
        ["clear_topic_permissions", "-p", v, u, "amq.topic"],
        ["list_topic_permissions", "-p", v, "--formatter", "json"],
        ["clear_topic_permissions", "-p", v, u],
        ["clear_topic_permissions", "-p", v, u],
        ["list_topic_permissions", "-p", v],
        ["list_topic_permissions", "-p", v, "--formatter", "json"],
        ["list_topic_permissions", "-p", nv],
        ["set_topic_permissions", "-p", nv, u, "amq.topic", "^a", "^b"],
        ["clear_topic_permissions", "-p", nv, u],
        ["set_topic_permissions", "-p", v, "no-such-user", "amq.topic", "^a", "^b"],
        ["clear_topic_permissions", "-p", v, "no-such-user"],
        ["list_user_topic_permissions", "no-such-user"],
        ["set_topic_permissions", "-p", v, u, "amq.topic", "(", "^b"],
    ]


TOPIC_PERMISSIONS = [
    ("set_topic_permissions -p {V} {U} amq.topic ^a ^b", 0,
     'Setting topic permissions on "amq.topic" for user "{U}" in vhost "{V}" ...\n', ""),
    ("set_topic_permissions -p {V} {U} x2 ^c ^d --formatter json", 0, '{"node":"{N}","result":"ok"}\n', ""),
    ("list_topic_permissions -p {V}", 0,
     'Listing topic permissions for vhost "{V}" ...\nuser\texchange\twrite\tread\n'
     "{U}\tamq.topic\t^a\t^b\n{U}\tx2\t^c\t^d\n", ""),
    ("list_topic_permissions -p {V} -s", 0, "{U}\tamq.topic\t^a\t^b\n{U}\tx2\t^c\t^d\n", ""),
    ("list_user_topic_permissions {U}", 0,
     'Listing topic permissions for user "{U}" ...\n{V}\tamq.topic\t^a\t^b\n{V}\tx2\t^c\t^d\n', ""),
    ("clear_topic_permissions -p {V} {U} amq.topic", 0,
     'Clearing topic permissions on "amq.topic" for user "{U}" in vhost "{V}" ...\n', ""),
    ("list_topic_permissions -p {V} --formatter json", 0,
     '[\n{"user":"{U}","exchange":"x2","write":"^c","read":"^d"}\n]\n', ""),
    ("clear_topic_permissions -p {V} {U}", 0, 'Clearing topic permissions for user "{U}" in vhost "{V}" ...\n', ""),
    ("clear_topic_permissions -p {V} {U}", 0, 'Clearing topic permissions for user "{U}" in vhost "{V}" ...\n', ""),
    ("list_topic_permissions -p {V}", 0, 'Listing topic permissions for vhost "{V}" ...\n\n', ""),
    ("list_topic_permissions -p {V} --formatter json", 0, "[]\n", ""),
    ("list_topic_permissions -p {NV}", 65, 'Listing topic permissions for vhost "{NV}" ...\n',
     "Virtual host '{NV}' does not exist\n"),
    ("set_topic_permissions -p {NV} {U} amq.topic ^a ^b", 69,
     'Setting topic permissions on "amq.topic" for user "{U}" in vhost "{NV}" ...\n',
     "Error:\nVirtual host {NV} does not exist\n"),
    ("clear_topic_permissions -p {NV} {U}", 69, 'Clearing topic permissions for user "{U}" in vhost "{NV}" ...\n',
     "Error:\nVirtual host {NV} does not exist\n"),
    ("set_topic_permissions -p {V} no-such-user amq.topic ^a ^b", 67,
     'Setting topic permissions on "amq.topic" for user "no-such-user" in vhost "{V}" ...\n',
     "Error:\nUser no-such-user does not exist\n"),
    ("clear_topic_permissions -p {V} no-such-user", 67,
     'Clearing topic permissions for user "no-such-user" in vhost "{V}" ...\n',
     "Error:\nUser no-such-user does not exist\n"),
    ("list_user_topic_permissions no-such-user", 69, 'Listing topic permissions for user "no-such-user" ...\n',
     'Error:\n{:no_such_user, "no-such-user"}\n'),
    ("set_topic_permissions -p {V} {U} amq.topic ( ^b", 69,
     'Setting topic permissions on "amq.topic" for user "{U}" in vhost "{V}" ...\n',
     "Error:\n{:invalid_regexp, \"(\", {'missing )', 1}}\n"),
]


def _topic_permissions(m: Mgmt) -> list:
    v, u, nv = m.vhost(), m.user(), unique("ctl-none")
    st, _ = m.api("PUT", f"/api/users/{q(u)}", {"password": "pw", "tags": ""})
    assert st in (201, 204)
    return transcript(m, topic_permission_steps(v, u, nv), {v: "{V}", u: "{U}", nv: "{NV}"})


def test_topic_permissions(mgmt):
    assert _topic_permissions(mgmt) == TOPIC_PERMISSIONS


def parameter_steps(v, nv, g) -> list:
    return [
        ["set_parameter", "-p", v, "vhost-limits", "limits", '{"max-connections":5}'],
        ["list_parameters", "-p", v],
        ["list_parameters", "-p", v, "--formatter", "json"],
        ["set_parameter", "-p", v, "vhost-limits", "limits", "notjson"],
        ["clear_parameter", "-p", v, "vhost-limits", "limits"],
        ["clear_parameter", "-p", v, "vhost-limits", "limits"],
        ["list_parameters", "-p", v],
        ["list_parameters", "-p", nv],
        ["set_parameter", "-p", nv, "vhost-limits", "limits", "{}"],
        ["set_global_parameter", g, '{"a":1}'],
        ["set_global_parameter", g + "-s", '"str"'],
        ["set_global_parameter", g + "-x", "notjson"],
        ["clear_global_parameter", g],
        ["clear_global_parameter", g + "-s"],
        ["clear_global_parameter", g],
    ]


PARAMETERS = [
    ("set_parameter -p {V} vhost-limits limits {\"max-connections\":5}", 0,
     'Setting runtime parameter "limits" for component "vhost-limits" to "{"max-connections":5}" in vhost "{V}" '
     '...\n', ""),
    ("list_parameters -p {V}", 0,
     'Listing runtime parameters for vhost "{V}" ...\ncomponent\tname\tvalue\nvhost-limits\tlimits\t'
     '{"max-connections":5}\n', ""),
    ("list_parameters -p {V} --formatter json", 0,
     '[\n{"component":"vhost-limits","name":"limits","value":"{\\"max-connections\\":5}"}\n]\n', ""),
    ("set_parameter -p {V} vhost-limits limits notjson", 69,
     'Setting runtime parameter "limits" for component "vhost-limits" to "notjson" in vhost "{V}" ...\n',
     "Error:\nJSON decoding error. Reason: badarg\n"),
    ("clear_parameter -p {V} vhost-limits limits", 0,
     'Clearing runtime parameter "limits" for component "vhost-limits" on vhost "{V}" ...\n', ""),
    ("clear_parameter -p {V} vhost-limits limits", 69,
     'Clearing runtime parameter "limits" for component "vhost-limits" on vhost "{V}" ...\n',
     "Error:\nParameter does not exist\n"),
    ("list_parameters -p {V}", 0, 'Listing runtime parameters for vhost "{V}" ...\n\n', ""),
    ("list_parameters -p {NV}", 65, 'Listing runtime parameters for vhost "{NV}" ...\n',
     "Virtual host '{NV}' does not exist\n"),
    ("set_parameter -p {NV} vhost-limits limits {}", 65,
     'Setting runtime parameter "limits" for component "vhost-limits" to "{}" in vhost "{NV}" ...\n',
     "Virtual host '{NV}' does not exist\n"),
    ('set_global_parameter {G} {"a":1}', 0, 'Setting global runtime parameter "{G}" to "{"a":1}" ...\n', ""),
    ('set_global_parameter {G}-s "str"', 0, 'Setting global runtime parameter "{G}-s" to ""str"" ...\n', ""),
    ("set_global_parameter {G}-x notjson", 69, 'Setting global runtime parameter "{G}-x" to "notjson" ...\n',
     "Error:\nJSON decoding error. Reason: badarg\n"),
    ("clear_global_parameter {G}", 0, 'Clearing global runtime parameter "{G}" ...\n', ""),
    ("clear_global_parameter {G}-s", 0, 'Clearing global runtime parameter "{G}-s" ...\n', ""),
    ("clear_global_parameter {G}", 69, 'Clearing global runtime parameter "{G}" ...\n',
     "Error:\nParameter does not exist\n"),
]


def _parameters(m: Mgmt) -> list:
    v, nv, g = m.vhost(), unique("ctl-none"), unique("ctl-gp")
    for suffix in ("", "-s", "-x"):
        m.cleanups.append(("DELETE", f"/api/global-parameters/{g}{suffix}"))
    return transcript(m, parameter_steps(v, nv, g), {v: "{V}", nv: "{NV}", g: "{G}"})


def test_parameters(mgmt):
    assert _parameters(mgmt) == PARAMETERS


def test_global_parameters_listed(mgmt):
    g = unique("ctl-gp")
    mgmt.cleanups.append(("DELETE", f"/api/global-parameters/{g}"))
    assert mgmt.ctl("set_global_parameter", g, "[1,2]").returncode == 0
    r = mgmt.ctl("list_global_parameters")
    assert r.returncode == 0
    out = lines(r.stdout)
    assert out[:2] == ["Listing global runtime parameters ...", "name\tvalue"]
    assert f"{g}\t[1,2]" in out
    assert any(re.fullmatch(r'internal_cluster_id\t"rabbitmq-cluster-id-[\w-]+"', line) for line in out)
    rows = json.loads(mgmt.ctl("list_global_parameters", "--formatter", "json").stdout)
    assert {"name": g, "value": "[1,2]"} in rows


def operator_policy_steps(v, nv) -> list:
    return [
        ["set_operator_policy", "-p", v, "op1", "^q", '{"max-length":10}', "--apply-to", "queues"],
        ["set_operator_policy", "-p", v, "op2", "^q", '{"ha-mode":"all"}'],
        ["set_operator_policy", "-p", v, "op3", "^q", '{"max-length":10}', "--priority", "5"],
        ["list_operator_policies", "-p", v],
        ["list_operator_policies", "-p", v, "--formatter", "json"],
        ["clear_operator_policy", "-p", v, "op1"],
        ["clear_operator_policy", "-p", v, "op1"],
        ["clear_operator_policy", "-p", v, "op3"],
        ["list_operator_policies", "-p", v],
        ["list_operator_policies", "-p", nv],
        ["set_operator_policy", "-p", nv, "op1", "^q", '{"max-length":10}'],
        ["list_policies", "-p", nv],
    ]


OPERATOR_POLICIES = [
    ('set_operator_policy -p {V} op1 ^q {"max-length":10} --apply-to queues', 0,
     'Setting operator policy override "op1" for pattern "^q" to "{"max-length":10}" with priority "0" for vhost '
     '"{V}" ...\n', ""),
    ('set_operator_policy -p {V} op2 ^q {"ha-mode":"all"}', 69,
     'Setting operator policy override "op2" for pattern "^q" to "{"ha-mode":"all"}" with priority "0" for vhost '
     '"{V}" ...\n', 'Error:\nValidation failed\n\n[{<<"ha-mode">>,<<"all">>}] are not recognised policy settings\n'),
    ('set_operator_policy -p {V} op3 ^q {"max-length":10} --priority 5', 0,
     'Setting operator policy override "op3" for pattern "^q" to "{"max-length":10}" with priority "5" for vhost '
     '"{V}" ...\n', ""),
    ("list_operator_policies -p {V}", 0,
     'Listing operator policy overrides for vhost "{V}" ...\nvhost\tname\tpattern\tapply-to\tdefinition\tpriority\n'
     '{V}\top1\t^q\tqueues\t{"max-length":10}\t0\n{V}\top3\t^q\tall\t{"max-length":10}\t5\n', ""),
    ("list_operator_policies -p {V} --formatter json", 0,
     '[\n{"vhost":"{V}","name":"op1","pattern":"^q","apply-to":"queues","definition":"{\\"max-length\\":10}",'
     '"priority":0}\n,{"vhost":"{V}","name":"op3","pattern":"^q","apply-to":"all","definition":'
     '"{\\"max-length\\":10}","priority":5}\n]\n', ""),
    ("clear_operator_policy -p {V} op1", 0, 'Clearing operator policy "op1" on vhost "{V}" ...\n', ""),
    ("clear_operator_policy -p {V} op1", 69, 'Clearing operator policy "op1" on vhost "{V}" ...\n',
     "Error:\nParameter does not exist\n"),
    ("clear_operator_policy -p {V} op3", 0, 'Clearing operator policy "op3" on vhost "{V}" ...\n', ""),
    ("list_operator_policies -p {V}", 0, 'Listing operator policy overrides for vhost "{V}" ...\n\n', ""),
    ("list_operator_policies -p {NV}", 65, 'Listing operator policy overrides for vhost "{NV}" ...\n',
     "Virtual host '{NV}' does not exist\n"),
    ('set_operator_policy -p {NV} op1 ^q {"max-length":10}', 65,
     'Setting operator policy override "op1" for pattern "^q" to "{"max-length":10}" with priority "0" for vhost '
     '"{NV}" ...\n', "Virtual host '{NV}' does not exist\n"),
    ("list_policies -p {NV}", 65, 'Listing policies for vhost "{NV}" ...\n', "Virtual host '{NV}' does not exist\n"),
]


def _operator_policies(m: Mgmt) -> list:
    v, nv = m.vhost(), unique("ctl-none")
    return transcript(m, operator_policy_steps(v, nv), {v: "{V}", nv: "{NV}"})


def test_operator_policies(mgmt):
    assert _operator_policies(mgmt) == OPERATOR_POLICIES


def vhost_and_flag_steps(v, nv) -> list:
    return [
        ["set_vhost_tags", v, "a", "b"],
        ["list_vhosts", "name", "tags"],
        ["set_vhost_tags", v],
        ["set_vhost_tags", nv, "a"],
        ["list_feature_flags", "name", "state", "stability"],
        ["list_feature_flags", "--formatter", "json", "name", "state"],
        ["enable_feature_flag", "quorum_queue"],
        ["enable_feature_flag", "no_such_flag"],
        ["list_unresponsive_queues", "-p", v],
        ["list_unresponsive_queues", "-p", v, "--formatter", "json", "name", "pid"],
        ["list_unresponsive_queues", "-p", v, "-s"],
    ]


def _vhosts_and_flags(m: Mgmt) -> list:
    v, nv = m.vhost(), unique("ctl-none")
    out = transcript(m, vhost_and_flag_steps(v, nv), {v: "{V}", nv: "{NV}"})
    # list_vhosts lists every vhost of the broker: keep the line of ours
    args, code, stdout, stderr = out[1]
    out[1] = (args, code, "\n".join(l for l in lines(stdout) if "{V}" in l or "\t" not in l
                                   or l == "name\ttags") + "\n", stderr)
    return out


FLAGS = ["classic_mirrored_queue_version", "drop_unroutable_metric", "empty_basic_get_metric",
         "implicit_default_bindings", "maintenance_mode_status", "quorum_queue", "stream_queue", "user_limits",
         "virtual_host_metadata"]

VHOSTS_AND_FLAGS = [
    ("set_vhost_tags {V} a b", 0, 'Setting tags for virtual host "{V}" to [a, b] ...\n', ""),
    ("list_vhosts name tags", 0, "Listing vhosts ...\nname\ttags\n{V}\t[a, b]\n", ""),
    ("set_vhost_tags {V}", 0, 'Setting tags for virtual host "{V}" to [] ...\n', ""),
    ("set_vhost_tags {NV} a", 65, 'Setting tags for virtual host "{NV}" to [a] ...\n',
     'Error:\nVirtual host "{NV}" does not exist\n'),
    ("list_feature_flags name state stability", 0,
     "Listing feature flags ...\nname\tstate\tstability\n" + "".join(f"{f}\tenabled\tstable\n" for f in FLAGS), ""),
    ("list_feature_flags --formatter json name state", 0,
     "[\n" + "".join(("," if i else "") + json.dumps({"name": f, "state": "enabled"}, separators=(",", ":")) + "\n"
                     for i, f in enumerate(FLAGS)) + "]\n", ""),
    ("enable_feature_flag quorum_queue", 0, 'Enabling feature flag "quorum_queue" ...\n', ""),
    ("enable_feature_flag no_such_flag", 64, 'Enabling feature flag "no_such_flag" ...\n',
     "Error:\nThis feature flag is not supported by node {N}\n"),
    ("list_unresponsive_queues -p {V}", 0, "Listing unresponsive queues for vhost {V} ...\n", ""),
    ("list_unresponsive_queues -p {V} --formatter json name pid", 0, "[\n]\n", ""),
    ("list_unresponsive_queues -p {V} -s", 0, "", ""),
]


def test_vhost_tags_feature_flags_unresponsive_queues(mgmt):
    assert _vhosts_and_flags(mgmt) == VHOSTS_AND_FLAGS


def test_enable_all_feature_flags(mgmt):
    usagi_only(mgmt)            # on a shared RabbitMQ it could enable a flag for good
    r = mgmt.ctl("enable_feature_flag", "all")
    assert (r.returncode, r.stdout, r.stderr) == (0, "Enabling all feature flags ...\n", "")


def test_close_all_user_connections(mgmt):
    v, u = mgmt.vhost(), mgmt.user()
    assert mgmt.api("PUT", f"/api/users/{q(u)}", {"password": "pw", "tags": ""})[0] in (201, 204)
    assert mgmt.api("PUT", f"/api/permissions/{q(v)}/{q(u)}",
                    {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    p = urllib.parse.urlsplit(mgmt.amqp(v))
    url = urllib.parse.urlunsplit((p.scheme, f"{u}:pw@{p.hostname}:{p.port}", p.path, "", ""))
    conn = pika.BlockingConnection(pika.URLParameters(url))
    other = pika.BlockingConnection(pika.URLParameters(mgmt.amqp(v)))
    try:
        poll(lambda: mgmt.ctl("list_connections", "-s", "user"), lambda r: u in lines(r.stdout))
        r = mgmt.ctl("close_all_user_connections", u, "go home")
        assert (r.returncode, r.stdout, r.stderr) == (0, f"Closing connections of user {u}, reason: go home...\n", "")
        with pytest.raises(pika.exceptions.ConnectionClosed) as exc:
            for _ in range(50):
                conn.process_data_events(0.1)
        assert "go home" in str(exc.value)
        other.process_data_events(0.1)
        assert other.is_open                    # another user's connection stays
    finally:
        for c in (conn, other):
            if c.is_open:
                c.close()
    r = mgmt.ctl("close_all_user_connections", "no-such-user", "x")
    assert (r.returncode, r.stdout) == (0, "Closing connections of user no-such-user, reason: x...\n")


# --------------------------------------------------------------------------- Usagi and RabbitMQ side by side

RABBITMQ_MGMT_URL = os.environ.get("USAGI_TEST_RABBITMQ_MGMT_URL") or "http://guest:guest@127.0.0.1:15682"
RABBITMQ_AMQP_URL = os.environ.get("USAGI_TEST_RABBITMQ_URL") or "amqp://guest:guest@127.0.0.1:5682/%2F"


@pytest.fixture
def rabbit():
    """RabbitMQ's management API, where one answers (else the test is skipped)."""
    p = urllib.parse.urlsplit(RABBITMQ_MGMT_URL)
    try:
        with urllib.request.urlopen(f"{p.scheme}://{p.hostname}:{p.port}/api/overview", timeout=3):
            pass
    except urllib.error.HTTPError as e:
        if e.code != 401:
            pytest.skip(f"no RabbitMQ management API at {p.hostname}:{p.port} ({e})")
    except OSError as e:
        pytest.skip(f"no RabbitMQ management API at {p.hostname}:{p.port} ({e})")
    m = Mgmt(url=RABBITMQ_MGMT_URL, amqp_url=RABBITMQ_AMQP_URL)
    st, ov = m.api("GET", "/api/overview")
    if st != 200 or ov.get("usagi_version") or ov.get("product_name") != "RabbitMQ":
        pytest.skip(f"{p.hostname}:{p.port} is not a RabbitMQ management API the tests can use")
    yield m
    for method, path in reversed(m.cleanups):
        try:
            m.api(method, path)
        except Exception:
            pass


@pytest.mark.parametrize("scenario", [_topic_permissions, _parameters, _operator_policies, _vhosts_and_flags])
def test_same_as_rabbitmq(mgmt, rabbit, scenario):
    """The scenario's usagictl transcript against Usagi is the one against RabbitMQ."""
    if not mgmt.is_usagi:
        pytest.skip("compares a Usagi server of the test's own with RabbitMQ")
    assert scenario(mgmt) == scenario(rabbit)


def test_diagnostics_same_as_rabbitmq(mgmt, rabbit):
    """The health checks print the same against Usagi as against RabbitMQ (ports aside)."""
    if not mgmt.is_usagi:
        pytest.skip("compares a Usagi server of the test's own with RabbitMQ")

    def run(m):
        out = []
        for args in (["ping"], ["check_running"], ["check_running", "--formatter", "json"],
                     ["check_local_alarms"], ["check_local_alarms", "--formatter", "json"], ["check_alarms"],
                     ["alarms"], ["alarms", "--formatter", "json"], ["check_virtual_hosts"],
                     ["check_virtual_hosts", "--formatter", "json"], ["is_running"], ["is_booting"],
                     ["check_protocol_listener", "amqp"], ["check_port_listener", "1"]):
            r = m.diag(*args)
            text = re.sub(r"\d{2,5}", "{PORT}", norm(m, r.stdout + r.stderr, {}))
            out.append((" ".join(args), r.returncode, re.sub(r"(\{PORT\}, )+", "{PORT}, ", text)))
        return out
    assert run(mgmt) == run(rabbit)


# --------------------------------------------------------------------------- against rabbitmqctl itself

needs_rabbitmqctl = pytest.mark.skipif(
    not (RABBITMQCTL and os.environ.get("USAGI_TEST_MGMT_URL")),
    reason="set USAGI_TEST_MGMT_URL to a RabbitMQ management API and USAGI_TEST_RABBITMQCTL to the rabbitmqctl "
           "command for the same node (see ctlutil.py)")


@needs_rabbitmqctl
@pytest.mark.parametrize("tool,args", [
    ("rabbitmqctl", "list_topic_permissions -p {v}"), ("rabbitmqctl", "list_topic_permissions -p {v} -s"),
    ("rabbitmqctl", "list_topic_permissions -p {v} --formatter json"),
    ("rabbitmqctl", "list_user_topic_permissions {u}"), ("rabbitmqctl", "list_topic_permissions -p {n}"),
    ("rabbitmqctl", "list_user_topic_permissions {n}"), ("rabbitmqctl", "list_parameters -p {v}"),
    ("rabbitmqctl", "list_parameters -p {v} --formatter json"), ("rabbitmqctl", "list_parameters -p {n}"),
    ("rabbitmqctl", "list_operator_policies -p {v}"), ("rabbitmqctl", "list_operator_policies -p {v} --formatter json"),
    ("rabbitmqctl", "list_operator_policies -p {n}"), ("rabbitmqctl", "list_global_parameters"),
    ("rabbitmqctl", "list_global_parameters --formatter json"), ("rabbitmqctl", "list_feature_flags"),
    ("rabbitmqctl", "list_feature_flags name state stability provided_by"),
    ("rabbitmqctl", "list_feature_flags --formatter json"), ("rabbitmqctl", "list_unresponsive_queues -p {v}"),
    ("rabbitmqctl", "list_unresponsive_queues -p {v} --formatter json"), ("rabbitmqctl", "list_policies -p {n}"),
    ("rabbitmqctl", "list_queues -p {v} name durable type leader members online"),
    ("rabbitmqctl", "set_vm_memory_high_watermark 1.5"), ("rabbitmqctl", "set_vm_memory_high_watermark absolute 2gb"),
    ("rabbitmqctl", "set_disk_free_limit abc"), ("rabbitmqctl", "set_disk_free_limit mem_relative"),
    ("rabbitmqctl", "rotate_logs"), ("rabbitmqctl", "set_log_level bogus"),
    ("rabbitmqctl", "clear_topic_permissions -p {v} {u} no-such-exchange"),
    ("rabbitmqctl", "clear_parameter -p {v} vhost-limits nothing"),
    ("rabbitmqctl", "clear_operator_policy -p {v} nothing"), ("rabbitmqctl", "clear_global_parameter {n}"),
    ("rabbitmqctl", "set_vhost_tags {n} a"), ("rabbitmqctl", "enable_feature_flag {n}"),
    ("rabbitmq-diagnostics", "ping"), ("rabbitmq-diagnostics", "ping --formatter json"),
    ("rabbitmq-diagnostics", "check_running"), ("rabbitmq-diagnostics", "check_running --formatter json"),
    ("rabbitmq-diagnostics", "is_running"), ("rabbitmq-diagnostics", "check_local_alarms"),
    ("rabbitmq-diagnostics", "check_local_alarms --formatter json"), ("rabbitmq-diagnostics", "check_alarms"),
    ("rabbitmq-diagnostics", "alarms"), ("rabbitmq-diagnostics", "alarms --formatter json"),
    ("rabbitmq-diagnostics", "check_virtual_hosts"), ("rabbitmq-diagnostics", "check_virtual_hosts --formatter json"),
    ("rabbitmq-diagnostics", "listeners"), ("rabbitmq-diagnostics", "listeners --formatter json"),
    ("rabbitmq-diagnostics", "check_port_listener 1"), ("rabbitmq-diagnostics", "check_port_listener 1 --formatter json"),
    ("rabbitmq-diagnostics", "check_protocol_listener amqp"), ("rabbitmq-diagnostics", "check_protocol_listener mqtt"),
    ("rabbitmq-diagnostics", "check_protocol_listener mqtt --formatter json"),
    ("rabbitmq-diagnostics", "check_port_connectivity"), ("rabbitmq-diagnostics", "server_version"),
    ("rabbitmq-diagnostics", "log_location"), ("rabbitmq-diagnostics", "log_location --formatter json"),
    ("rabbitmq-diagnostics", "memory_breakdown extra"),
])
def test_same_as_rabbitmqctl(mgmt, tool, args):
    """usagictl (usagi-diagnostics) against RabbitMQ's management API prints what rabbitmqctl
    (rabbitmq-diagnostics) prints for the same node."""
    v, u, n = mgmt.vhost(), mgmt.user(), unique("ctl-none")
    assert mgmt.api("PUT", f"/api/users/{q(u)}", {"password": "pw", "tags": ""})[0] in (201, 204)
    assert mgmt.api("PUT", f"/api/topic-permissions/{q(v)}/{q(u)}",
                    {"exchange": "amq.topic", "write": "^a", "read": "^b"})[0] in (201, 204)
    assert mgmt.api("PUT", f"/api/parameters/vhost-limits/{q(v)}/limits",
                    {"value": {"max-queues": 10}})[0] in (201, 204)
    assert mgmt.api("PUT", f"/api/operator-policies/{q(v)}/op",
                    {"pattern": "^x", "definition": {"max-length": 3}, "apply-to": "queues"})[0] in (201, 204)
    conn = pika.BlockingConnection(pika.URLParameters(mgmt.amqp(v)))
    try:
        ch = conn.channel()
        ch.queue_declare("cq", durable=True)
        ch.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        conn.close()
    argv = shlex.split(args.format(v=v, u=u, n=n))
    mine = (mgmt.ctl if tool == "rabbitmqctl" else mgmt.diag)(*argv)
    theirs = run_rabbitmqctl(*argv, tool=tool)
    assert mine.returncode == theirs.returncode, (mine.stderr, theirs.stderr)
    if "--formatter" in argv and mine.stdout.strip().startswith("["):
        assert sorted(json.loads(mine.stdout), key=json.dumps) == sorted(json.loads(theirs.stdout), key=json.dumps)
    else:
        assert sorted(lines(mine.stdout)) == sorted(lines(theirs.stdout))
    # rabbitmqctl also logs a warning of the node's to stderr for some errors
    assert mine.stderr == "\n".join(l for l in theirs.stderr.split("\n") if not re.match(r"\d\d:\d\d:\d\d\.\d+ \[", l)) \
        or mine.stderr == theirs.stderr


# --------------------------------------------------------------------------- Usagi: the app, reset, limits, logs

def usagi_only(mgmt):
    if not mgmt.is_usagi:
        pytest.skip("changes the node for everyone: run only against a Usagi server of the test's own")


def test_list_queues_pid_memory_and_replicas(mgmt):
    v = mgmt.vhost()
    conn = pika.BlockingConnection(pika.URLParameters(mgmt.amqp(v)))
    try:
        ch = conn.channel()
        ch.queue_declare("cq")
        ch.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
        ch.basic_publish("", "cq", b"x" * 1000)
        ch.queue_declare("cq", passive=True)
    finally:
        conn.close()
    node = mgmt.node()
    r = poll(lambda: mgmt.ctl("list_queues", "-p", v, "-s", "name", "pid", "memory", "leader", "members", "online",
                              "type"), lambda r: all(l.split("\t")[2] not in ("", "0") for l in lines(r.stdout)))
    rows = {l.split("\t")[0]: l.split("\t")[1:] for l in lines(r.stdout)}
    assert set(rows) == {"cq", "qq"}, r.stdout
    for name, (pid, memory, *_rest) in rows.items():
        if mgmt.is_usagi:
            assert re.fullmatch(rf"<{re.escape(node)}\.\d+\.\d+\.0>", pid), pid
        else:
            assert pid == ""        # RabbitMQ's management API does not give a queue's pid
        assert int(memory) > 0
    assert rows["cq"][2:] == ["", "", "", "classic"]          # a classic queue has no leader or members
    assert rows["qq"][2:] == [node, f"[{node}]", f"[{node}]", "quorum"]
    if not mgmt.is_usagi:
        return
    assert rows["cq"][0] != rows["qq"][0]
    again = mgmt.ctl("list_queues", "-p", v, "-s", "name", "pid")
    assert {l.split("\t")[0]: l.split("\t")[1] for l in lines(again.stdout)} == {k: x[0] for k, x in rows.items()}
    rows = json.loads(mgmt.ctl("list_queues", "-p", v, "--formatter", "json", "name", "pid").stdout)
    assert all(x["pid"].startswith(f"<{node}.") for x in rows)


def test_environment(mgmt):
    usagi_only(mgmt)
    node = mgmt.node()
    r = mgmt.ctl("environment")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith(f"Application environment of node {node} ...\n[{{rabbit,[")
    for item in ("{channel_max,2047}", "{default_user,<<\"guest\">>}", "{default_vhost,<<\"/\">>}",
                 "{disk_free_limit,50000000}", "{heartbeat,60}", "{vm_memory_high_watermark,[{relative,0.4}]}",
                 "{loopback_users,[<<\"guest\">>]}", "{connection_max,infinity}", "{rabbitmq_management,"):
        assert item in out, item
    assert "default_pass" not in out and "guest\",\"guest" not in out
    env = json.loads(mgmt.ctl("environment", "--formatter", "json").stdout)
    port = int(urllib.parse.urlsplit(mgmt.url).port)
    assert env["rabbitmq_management"]["listener"]["port"] == port
    assert env["rabbit"]["tcp_listeners"] == [int(urllib.parse.urlsplit(mgmt.amqp_url).port)]


def test_environment_and_node_control_need_usagi(mgmt):
    if mgmt.is_usagi:
        pytest.skip("what usagictl says of a management API without Usagi's endpoints (RabbitMQ's)")
    for args in (["environment"], ["set_log_level", "debug"]):
        r = mgmt.ctl(*args)
        assert r.returncode == 69
        assert "/api/usagi/" in r.stderr and "only against Usagi nodes" in r.stderr
    r = mgmt.ctl("rotate_logs")
    assert (r.returncode, r.stdout, r.stderr) == (69, "", "Error:\nThis command does not rotate logs anymore "
                                                          "[deprecated]\n")
    r = mgmt.diag("log_tail")
    assert r.returncode == 69 and "only against Usagi nodes" in r.stderr


def test_app_stopped_reset_start_app(mgmt):
    """While the app is stopped, listings (and everything but node control) say so, as rabbitmqctl
    does; reset needs it stopped; after reset and start_app the node is as new, durably."""
    usagi_only(mgmt)
    node = mgmt.node()
    v, u = mgmt.vhost(), mgmt.user()
    mgmt.api("PUT", f"/api/users/{q(u)}", {"password": "pw", "tags": ""})
    publish = pika.BlockingConnection(pika.URLParameters(mgmt.amqp(v)))
    publish.channel().queue_declare("kept", durable=True)
    publish.close()

    r = mgmt.ctl("reset")
    assert (r.returncode, r.stdout) == (64, "")
    assert r.stderr.startswith(usage_error("reset", ["reset"], "this command requires the 'rabbit' app to be "
                                           "stopped on the target node. Stop it with 'usagictl stop_app'.",
                                           prefix="Error: "))
    r = mgmt.ctl("stop_app")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"Stopping rabbit application on node {node} ...\n", "")
    running_only = "this command requires the 'rabbit' app to be running on the target node. Start it with " \
                   "'usagictl start_app'."
    for args in (["list_queues"], ["list_queues", "-p", v, "--formatter", "json"], ["list_users"], ["list_vhosts"],
                 ["list_exchanges"], ["list_topic_permissions"], ["list_parameters"], ["status"],
                 ["add_user", "x", "y"], ["set_disk_free_limit", "1GB"]):
        r = mgmt.ctl(*args)
        assert (r.returncode, r.stdout) == (64, ""), args
        assert r.stderr.startswith(usage_error(args[0], args, running_only, prefix="Error: ")), r.stderr
    for args in (["listeners"], ["check_local_alarms"], ["memory_breakdown"], ["list_queues"]):
        r = mgmt.diag(*args)
        assert (r.returncode, r.stdout) == (64, ""), args
        assert r.stderr.startswith(usage_error(args[0], args, running_only, prog="usagi-diagnostics",
                                               prefix="Error: ")), r.stderr
    r = mgmt.diag("check_running")
    assert (r.returncode, r.stdout, r.stderr) == (
        69, f"Checking if RabbitMQ is running on node {node} ...\n",
        f"Error:\nRabbitMQ on node {node} is not running or has not fully booted yet (check with is_booting)\n")
    r = mgmt.diag("is_running", "-q")
    assert (r.returncode, r.stdout) == (0, f"RabbitMQ on node {node} is not running or has not fully booted yet "
                                           f"(check with is_booting)\n")
    assert mgmt.diag("ping", "-q").stdout == "Ping succeeded\n"
    assert mgmt.ctl("environment", "-q").returncode == 0
    assert mgmt.ctl("stop_app").returncode == 0                 # stopping a stopped app is fine

    r = mgmt.ctl("reset")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"Resetting node {node} ...\n", "")
    r = mgmt.ctl("force_reset", "--formatter", "json")
    assert (r.returncode, r.stdout) == (0, json.dumps({"node": node, "result": "ok"}, separators=(",", ":")) + "\n")
    r = mgmt.ctl("start_app")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"Starting node {node} ...\n", "")
    assert lines(mgmt.ctl("list_vhosts", "-s").stdout) == ["/"]
    assert lines(mgmt.ctl("list_users", "-s").stdout) == ["guest\t[administrator]"]
    assert lines(mgmt.ctl("list_permissions", "-s").stdout) == ["guest\t.*\t.*\t.*"]
    assert mgmt.ctl("list_queues", "-s").stdout == ""
    gp = json.loads(mgmt.ctl("list_global_parameters", "--formatter", "json").stdout)
    assert [p["name"] for p in gp] in ([], ["internal_cluster_id"])

    # the reset is durable: a restart finds the virgin node
    server = mgmt.server
    server.stop()
    server.start()
    host, port = _wait_for_mgmt(server)
    url = f"http://guest:guest@{host}:{port}"
    assert lines(run_ctl(url, "list_vhosts", "-s").stdout) == ["/"]
    assert lines(run_ctl(url, "list_users", "-s").stdout) == ["guest\t[administrator]"]
    assert run_ctl(url, "list_queues", "-s").stdout == ""
    mgmt.cleanups.clear()


def test_runtime_limits_and_alarms(mgmt):
    """set_disk_free_limit and set_vm_memory_high_watermark act at once: the alarms they set show in
    status, alarms and the health checks, and clear when the limits go back."""
    usagi_only(mgmt)
    node = mgmt.node()
    r = mgmt.ctl("set_disk_free_limit", "2000000GB")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"Setting disk free limit on {node} to 2000000GB bytes ...\n", "")
    r = mgmt.diag("check_local_alarms")
    assert (r.returncode, r.stdout, r.stderr) == (
        69, f"Asking node {node} to report any local resource alarms ...\n",
        f"Error:\nFree disk space alarm on node {node}\n")
    r = mgmt.diag("check_local_alarms", "--formatter", "json")
    assert (r.returncode, r.stdout) == (69, "")
    assert json.loads(r.stderr) == {"local": [f"Free disk space alarm on node {node}"],
                                    "message": f"Node {node} reported local alarms", "result": "error"}
    r = mgmt.diag("check_alarms")
    assert (r.returncode, r.stderr) == (69, f"Free disk space alarm on node {node}\n")
    assert json.loads(mgmt.diag("alarms", "--formatter", "json").stdout) == {
        "global": [], "local": [f"Free disk space alarm on node {node}"],
        "message": f"Node {node} reported alarms", "result": "ok"}
    out = lines(mgmt.ctl("status").stdout)
    assert out[out.index("Alarms") + 2] == f"Free disk space alarm on node {node}"
    assert "Low free disk space watermark: 2000000.0 gb" in out
    assert mgmt.api("GET", f"/api/nodes/{q(node)}")[1]["disk_free_limit"] == 2000000 * 10 ** 9

    r = mgmt.ctl("set_vm_memory_high_watermark", "absolute", "1M")
    assert (r.returncode, r.stdout) == (0, f"Setting memory threshold on {node} to 1M bytes ...\n")
    r = poll(lambda: mgmt.diag("alarms", "-q"), lambda r: "Memory alarm" in r.stdout)
    assert lines(r.stdout) == [f"Free disk space alarm on node {node}", f"Memory alarm on node {node}"]
    env = json.loads(mgmt.ctl("environment", "--formatter", "json").stdout)
    assert env["rabbit"]["vm_memory_high_watermark"] == {"absolute": 1024 ** 2}
    assert "Memory high watermark setting: 0.001 gb, computed to: 0.001 gb" in lines(mgmt.ctl("status").stdout)

    assert mgmt.ctl("set_vm_memory_high_watermark", "0.4").returncode == 0
    assert mgmt.ctl("set_disk_free_limit", "mem_relative", "0.0").returncode == 0
    r = poll(lambda: mgmt.diag("check_alarms"), lambda r: r.returncode == 0)
    assert (r.returncode, lines(r.stdout)[-1]) == (0, f"Node {node} reported no alarms, local or clusterwide")
    assert "Memory high watermark setting: 0.4 of available memory" in mgmt.ctl("status").stdout
    r = mgmt.ctl("set_disk_free_limit", "50MB", "--formatter", "json")
    assert json.loads(r.stdout) == {"node": node, "result": "ok"}
    assert mgmt.api("GET", f"/api/nodes/{q(node)}")[1]["disk_free_limit"] == 50 * 10 ** 6


def test_set_log_level(mgmt):
    usagi_only(mgmt)
    r = mgmt.ctl("set_log_level", "bogus")
    assert (r.returncode, r.stdout, r.stderr) == (
        69, "", "Error:\nlevel bogus is not supported. Try one of debug, info, warning, error, critical, none\n")
    r = mgmt.ctl("set_log_level", "debug")
    assert (r.returncode, r.stdout) == (0, 'Setting log level to "debug" ...\n')
    assert "{log_levels,debug}" in mgmt.ctl("environment").stdout
    assert mgmt.ctl("set_log_level", "info").returncode == 0


@pytest.fixture
def logging_server(fresh_server, tmp_path):
    """A Usagi server that writes a log file (log.file in its configuration file), and that file."""
    log_file = str(tmp_path / "usagi.log")
    conf = tmp_path / "rabbitmq.conf"
    conf.write_text(f"log.file = {log_file}\nlog.file.rotation.count = 3\n", encoding="utf-8")
    server = fresh_server(extra_args=["--config", str(conf)])
    where = _wait_for_mgmt(server)
    assert where is not None
    return f"http://guest:guest@{where[0]}:{where[1]}", log_file


def test_log_tail_location_rotate(logging_server):
    url, log_file = logging_server
    node = json.loads(run_ctl(url, "status", "--formatter", "json").stdout)["node_name"]
    r = run_diag(url, "log_location")
    assert (r.returncode, r.stdout) == (0, f"Log file location(s) on node {node} ...\n{log_file}\n")
    assert json.loads(run_diag(url, "log_location", "--formatter", "json").stdout) == {
        "node_name": node, "paths": [log_file], "result": "ok"}
    with open(log_file, encoding="utf-8") as f:
        tail = f.read().splitlines()[-3:]
    r = run_diag(url, "log_tail", "-N", "3")
    assert r.returncode == 0, r.stderr
    assert lines(r.stdout) == [f"Last 3 log lines on node {node} ..."] + tail
    r = run_diag(url, "log_tail", "--number", "2", "--formatter", "json")
    assert r.stdout.startswith("[\n{\"message\":")
    assert [x["message"] for x in json.loads(r.stdout)] == tail[-2:]
    assert len(lines(run_diag(url, "log_tail", "-q").stdout)) <= 50

    r = run_ctl(url, "rotate_logs")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"Rotating logs for node {node} ...\n", "")
    assert os.path.exists(log_file + ".1")
    with open(log_file, encoding="utf-8") as f:
        fresh = f.read()
    assert "rotated" in fresh and "AMQP listener" not in fresh      # the new file has only what came after
    r = run_diag(url, "log_tail", "-q", "-N", "1")
    assert "log files rotated" in r.stdout

    # set_log_level changes what the outputs write
    quiet, loud = unique("ctl-quiet"), unique("ctl-loud")
    assert run_ctl(url, "set_log_level", "warning").returncode == 0
    assert "{log_levels,warning}" in run_ctl(url, "environment").stdout
    assert run_ctl(url, "add_vhost", quiet).returncode == 0          # logged at info level
    assert run_ctl(url, "set_log_level", "info").returncode == 0
    assert run_ctl(url, "add_vhost", loud).returncode == 0
    with open(log_file, encoding="utf-8") as f:
        text = f.read()
    assert f"vhost '{loud}' added" in text and f"vhost '{quiet}' added" not in text


def test_no_log_file(mgmt):
    usagi_only(mgmt)
    node = mgmt.node()
    r = mgmt.diag("log_tail")
    assert (r.returncode, r.stdout) == (70, f"Last 50 log lines on node {node} ...\n")
    assert r.stderr == "Error:\nNo log files configured on the node (it logs to <stderr> only)\n"
    r = mgmt.diag("log_location")
    assert (r.returncode, r.stderr) == (70, "Error:\nNo log files configured on the node\n")
    r = mgmt.ctl("rotate_logs")
    assert (r.returncode, r.stdout) == (69, "")
    assert "has no log file to rotate" in r.stderr


# --------------------------------------------------------------------------- diagnostics (Usagi or RabbitMQ)

def test_diagnostics_health_checks(mgmt):
    node = mgmt.node()
    amqp_port = urllib.parse.urlsplit(mgmt.amqp("/")).port
    checks = [
        (["ping"], [f"Will ping {node}. This only checks if the OS process is running and registered with epmd. "
                    f"Timeout: 60000 ms.", "Ping succeeded"]),
        (["check_running"], [f"Checking if RabbitMQ is running on node {node} ...",
                             f"RabbitMQ on node {node} is fully booted and running"]),
        (["is_running"], [f"Asking node {node} for its status ...",
                          f"RabbitMQ on node {node} is fully booted and running"]),
        (["check_local_alarms"], [f"Asking node {node} to report any local resource alarms ...",
                                  f"Node {node} reported no local alarms"]),
        (["check_alarms"], [f"Asking node {node} to report any local resource alarms ...",
                            f"Node {node} reported no alarms, local or clusterwide"]),
        (["alarms"], [f"Asking node {node} to report any known resource alarms ...",
                      f"Node {node} reported no alarms, local or clusterwide"]),
        (["check_virtual_hosts"], [f"Checking if all vhosts are running on node {node} ...",
                                   f"Node {node} reported all vhosts as running"]),
        (["check_protocol_listener", "amqp"], [
            f"Asking node {node} if there's an active listener for protocol amqp ...",
            f"A listener for protocol amqp is running on node {node}."]),
        (["check_port_listener", str(amqp_port)], [
            f"Asking node {node} if there's an active listener on port {amqp_port} ...",
            f"A listener for port {amqp_port} is running on node {node}."]),
    ]
    for args, expected in checks:
        r = mgmt.diag(*args)
        assert (r.returncode, lines(r.stdout), r.stderr) == (0, expected, ""), args
    for args, obj in ((["check_local_alarms"], {"result": "ok"}), (["check_virtual_hosts"], {"result": "ok"}),
                      (["ping"], {"message": "Ping succeeded"}),
                      (["alarms"], {"alarms": [], "node": node, "result": "ok"}),
                      (["check_running"], {"message": f"RabbitMQ on node {node} is fully booted and running"})):
        r = mgmt.diag(*args, "--formatter", "json")
        assert (r.returncode, json.loads(r.stdout)) == (0, obj), args

    r = mgmt.diag("listeners")
    out = lines(r.stdout)
    assert out[0] == f"Asking node {node} to report its protocol listeners ..."
    assert any(re.fullmatch(rf"Interface: \S+, port: {amqp_port}, protocol: amqp, purpose: AMQP 0-9-1 and AMQP 1.0",
                            l) for l in out[1:]), out
    ls = json.loads(mgmt.diag("listeners", "--formatter", "json").stdout)
    assert ls["result"] == "ok" and ls["node"] == node
    ports = sorted(l["port"] for l in ls["listeners"])
    assert [l["port"] for l in ls["listeners"]] == sorted(ports, key=str)
    r = mgmt.diag("check_port_listener", "1")
    shown = ", ".join(str(p) for p in ports)
    assert (r.returncode, r.stdout, r.stderr) == (
        69, f"Asking node {node} if there's an active listener on port 1 ...\n",
        f"No listener for port 1 is active on node {node}. Found listeners that use the following ports: {shown}\n")
    r = mgmt.diag("check_protocol_listener", "mqtt")
    protocols = ", ".join(sorted({l["protocol"] for l in ls["listeners"]}))
    assert (r.returncode, r.stderr) == (69, f"Error:\nNo listener for protocol mqtt is active on node {node}. Found "
                                            f"listeners for the following protocols: {protocols}\n")
    r = mgmt.diag("check_port_connectivity")
    tested = ", ".join(str(p) for p in ports)
    if mgmt.is_usagi:
        assert (r.returncode, lines(r.stdout)) == (0, [
            f"Testing TCP connections to all active listeners on node {node} ...",
            f"Successfully connected to ports {tested} on node {node}."]), r.stderr
    else:
        assert lines(r.stdout)[0] == f"Testing TCP connections to all active listeners on node {node} ..."

    r = mgmt.diag("memory_breakdown")
    out = lines(r.stdout)
    assert out[0] == f"Reporting memory breakdown on node {node}..."
    assert all(re.fullmatch(r"[a-z_]+: \d+(\.\d+)? gb \(\d+(\.\d+)?%\)", l) for l in out[1:]), out
    b = json.loads(mgmt.diag("memory_breakdown", "--formatter", "json").stdout)
    sizes = [x["bytes"] for x in b.values()]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) > 0
    assert {"queue_procs", "connection_readers", "binary", "code", "allocated_unused"} <= set(b)
    out = lines(mgmt.diag("memory_breakdown", "--unit", "mb", "-q").stdout)
    assert all(" mb (" in l for l in out)
    r = mgmt.diag("server_version")
    assert (r.returncode, lines(r.stdout)) == (
        0, [f"Asking node {node} for its RabbitMQ version...", mgmt.api("GET", "/api/overview")[1]["rabbitmq_version"]])


def test_memory_breakdown_counts_messages(mgmt):
    """What queued messages hold shows under queue_procs."""
    usagi_only(mgmt)
    v = mgmt.vhost()
    before = json.loads(mgmt.diag("memory_breakdown", "--formatter", "json").stdout)["queue_procs"]["bytes"]
    conn = pika.BlockingConnection(pika.URLParameters(mgmt.amqp(v)))
    try:
        ch = conn.channel()
        ch.queue_declare("mem")
        for _ in range(200):
            ch.basic_publish("", "mem", b"m" * 10_000)
        ch.queue_declare("mem", passive=True)
    finally:
        conn.close()
    r = poll(lambda: json.loads(mgmt.diag("memory_breakdown", "--formatter", "json").stdout),
             lambda b: b["queue_procs"]["bytes"] >= before + 2_000_000)
    assert r["queue_procs"]["bytes"] >= before + 2_000_000


def test_report(mgmt):
    node = mgmt.node()
    v = mgmt.vhost()
    r = mgmt.ctl("report", timeout=120)
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert out[0] == f"Reporting server status of node {node} ..."
    for banner in (f"Status of node {node} ...", f"Cluster status of node {node} ...", "Listing connections ...",
                   "Listing channels ...", f"Listing queues for vhost {v} ...", f"Listing exchanges for vhost {v} ...",
                   f"Listing bindings for vhost {v}...", f'Listing permissions for vhost "{v}" ...',
                   f'Listing policies for vhost "{v}" ...', f'Listing runtime parameters for vhost "{v}" ...'):
        assert banner in out, banner
    if mgmt.is_usagi:
        assert f"Application environment of node {node} ..." in out


def test_shutdown(mgmt):
    usagi_only(mgmt)
    node = mgmt.node()
    pid = mgmt.server.proc.pid
    r = mgmt.ctl("shutdown")
    assert (r.returncode, lines(r.stdout), r.stderr) == (0, [
        f"Shutting down RabbitMQ node {node} running at PID {pid}", f"Waiting for PID {pid} to terminate",
        f"RabbitMQ node {node} running at PID {pid} successfully shut down"], "")
    assert mgmt.server.proc.wait(20) is not None
    mgmt.cleanups.clear()


def test_list_queues_exclusive_owner_and_consumer(mgmt):
    """owner_pid and exclusive_consumer_pid name the connection and channel that list_connections
    and list_channels show (their pid columns)."""
    usagi_only(mgmt)
    v = mgmt.vhost()
    conn = pika.BlockingConnection(pika.URLParameters(mgmt.amqp(v)))
    try:
        ch = conn.channel()
        ch.queue_declare("ex", exclusive=True)
        ch.basic_consume("ex", lambda *a: None, exclusive=True, consumer_tag="only-me")
        conn.process_data_events(0.2)
        r = mgmt.ctl("list_queues", "-p", v, "-s", "name", "owner_pid", "exclusive", "exclusive_consumer_pid",
                     "exclusive_consumer_tag")
        name, owner, exclusive, consumer_pid, tag = lines(r.stdout)[0].split("\t")
        channels = [l.split("\t") for l in lines(mgmt.ctl("list_channels", "-s", "pid", "connection", "vhost").stdout)]
        mine = [c for c in channels if c[2] == v]
        assert len(mine) == 1
        assert (name, exclusive, tag) == ("ex", "true", "only-me")
        assert (consumer_pid, owner) == (mine[0][0], mine[0][1])
    finally:
        conn.close()
