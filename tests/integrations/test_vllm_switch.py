"""The vLLM plugin's switch without vLLM: off means nothing is imported or started, the settings come
from the environment, and the middleware joins vLLM's own ``--middleware`` list once."""

from __future__ import annotations

import argparse
import subprocess
import sys
from types import SimpleNamespace

from llmco2_vllm.patch import MIDDLEWARE_PATH, add_middleware, patch_api_server_args
from llmco2_vllm.settings import Settings


# ---- the switch -----------------------------------------------------------------------------------
def test_switch_off_means_nothing_happens():
    code = (
        "import os, sys, threading\n"
        "os.environ.pop('LLMCO2_SIDECAR', None)\n"
        "from llmco2_vllm.plugin import register\n"
        "register(); register()\n"
        "bad = [m for m in ('grpc', 'vllm', 'llmco2_sidecar', 'llmco2_vllm.patch', 'llmco2_vllm.hook') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_settings_from_env():
    assert Settings.from_env({}) is None
    assert Settings.from_env({"LLMCO2_SIDECAR": "  "}) is None
    s = Settings.from_env({"LLMCO2_SIDECAR": "unix:/tmp/x.sock", "LLMCO2_GPU": "H100", "LLMCO2_RESPONSE_WAIT_S": "99",
                           "LLMCO2_BUFFER_EVENTS": "oops"})
    assert (s.target, s.gpu, s.response_wait_s, s.buffer_events) == ("unix:/tmp/x.sock", "H100", 30.0, 100_000)


def test_middleware_is_added_once_through_vllms_own_list():
    class Parser(argparse.ArgumentParser):
        pass

    p = Parser()
    p.add_argument("--middleware", action="append", default=[])
    assert patch_api_server_args(Parser) and patch_api_server_args(Parser)
    assert p.parse_args([]).middleware == [MIDDLEWARE_PATH]
    assert p.parse_args(["--middleware", "a.B"]).middleware == ["a.B", MIDDLEWARE_PATH]
    assert p.parse_args(["--middleware", MIDDLEWARE_PATH]).middleware == [MIDDLEWARE_PATH]
    assert p.parse_args([]).middleware == [MIDDLEWARE_PATH]  # the parser's default list was not mutated
    assert not add_middleware(SimpleNamespace(model="x"))  # a namespace without the option is left alone
