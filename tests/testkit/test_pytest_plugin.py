"""The pytest plugin as a project sees it once usagi-mq is installed: the usagi_broker fixture, its
scope and mode set on the command line or in the ini file, found through the entry point."""
from __future__ import annotations

import textwrap

import pytest

from testkitutil import installed_usagi, run_pytest

pytestmark = pytest.mark.timeout(120)

# A project's tests: test_first leaves a queue behind; the later tests look for it, and compare the
# broker with the first one's, as EXPECT says: "shared" (one broker) or "fresh" (one per test).
PROJECT_TESTS = textwrap.dedent('''
    import os
    import sys

    import pika
    import pytest

    EXPECT = os.environ["EXPECT"]
    SEEN = {}


    def connect(url):
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        return pika.BlockingConnection(params)


    def has_queue(url, name):
        conn = connect(url)
        try:
            conn.channel().queue_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return False
        finally:
            if conn.is_open:
                conn.close()


    def test_0_nothing_started_before_a_test_asks():
        assert "usagi.server.app" not in sys.modules and "usagi.core.broker" not in sys.modules


    def test_first(usagi_broker):
        assert usagi_broker.url.startswith("amqp://guest:guest@127.0.0.1:")
        SEEN["port"] = usagi_broker.port
        conn = connect(usagi_broker.url)
        conn.channel().queue_declare("left.behind")
        conn.close()


    @pytest.mark.parametrize("n", [1, 2])
    def test_later(usagi_broker, n):
        same = usagi_broker.port == SEEN["port"]
        found = has_queue(usagi_broker.url, "left.behind")
        if EXPECT == "shared":
            assert same and found
        else:
            assert not same and not found
        SEEN["port"] = usagi_broker.port


    def test_process_or_thread(usagi_broker):
        want = os.environ.get("EXPECT_MODE", "thread")
        assert (usagi_broker.pid == os.getpid()) == (want == "thread")


    def test_management(usagi_broker):
        if os.environ.get("EXPECT_MANAGEMENT", "1") == "1":
            assert usagi_broker.management_url == f"http://guest:guest@127.0.0.1:{usagi_broker.management_port}"
        else:
            assert usagi_broker.management_url is None


    def test_options(usagi_broker):
        limit = os.environ.get("EXPECT_MAX_MESSAGE_SIZE")
        if limit:
            conn = connect(usagi_broker.url)
            ch = conn.channel()
            ch.queue_declare("small")
            ch.basic_publish("", "small", b"x" * (int(limit) + 1))
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                ch.basic_get("small")
            assert e.value.reply_code == 406
            conn.close()
''')
ALL = 7


@pytest.fixture
def project(tmp_path):
    site = installed_usagi(str(tmp_path / "site"))
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_queues.py").write_text(PROJECT_TESTS)

    def run(*args, ini: str = "", **expect):
        (root / "pytest.ini").write_text("[pytest]\n" + textwrap.dedent(ini))
        env = {k.upper(): str(v) for k, v in expect.items()}
        return run_pytest(["-v", "-p", "no:xdist", *args], cwd=str(root), site=site, env=env)
    return run


def passed(res, count: int = ALL):
    assert res.returncode == 0 and f"{count} passed" in res.stdout, res.stdout


def test_one_broker_for_the_run_by_default(project):
    passed(project(expect="shared"))


def test_fresh_broker_per_test_from_the_command_line(project):
    passed(project("--usagi-scope=function", expect="fresh"))


def test_settings_from_the_ini_file(project):
    ini = """
        usagi_scope = function
        usagi_management = false
        usagi_args = --max-message-size 1000
    """
    passed(project(ini=ini, expect="fresh", expect_management=0, expect_max_message_size=1000))


def test_command_line_wins_over_the_ini_file(project):
    passed(project("--usagi-scope=session", ini="usagi_scope = function\n", expect="shared"))


def test_broker_in_a_child_process(project):
    passed(project("--usagi-mode=process", "--usagi-scope=module", expect="shared", expect_mode="process"))


def test_the_scope_shapes_the_test_outcome(project):
    """The project's tests do fail when the broker is not what they expect (so the checks above bite)."""
    res = project(expect="fresh")
    assert res.returncode == 1 and "2 failed" in res.stdout, res.stdout


def test_a_bad_setting_is_a_usage_error(project):
    res = project(ini="usagi_scope = forever\n", expect="shared")
    assert res.returncode != 0 and "usagi_scope must be one of session" in res.stdout, res.stdout
