"""Configuration precedence (flags > LLMCO2_* env > TOML > defaults), ``llmco2 serve --help``, TLS."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

import grpc
import pytest
from sidecar_testkit import identity, make_config

from llmco2_sidecar import config as cfgmod
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo
from llmco2_sidecar.errors import InputError
from llmco2_sidecar.service.server import SidecarThread


def _args(argv):
    p = argparse.ArgumentParser()
    cfgmod.add_arguments(p)
    return p.parse_args(argv)


def test_precedence(tmp_path):
    toml = tmp_path / "sidecar.toml"
    toml.write_text('[sidecar]\npue = 1.3\nport = 6000\nlog = "from-file.jsonl"\nlog_steps = true\nregion = "fr"\n')
    env = {"LLMCO2_PORT": "7000", "LLMCO2_LOG": "from-env.jsonl", "LLMCO2_LOG_STEPS": "false"}
    c = cfgmod.resolve(_args(["--config", str(toml), "--log", "from-flag.jsonl"]), env=env)
    assert (c.log, c.port, c.pue, c.log_steps, c.region) == ("from-flag.jsonl", 7000, 1.3, False, "fr")
    assert c.host == "127.0.0.1" and c.fsync == "interval"  # defaults
    c = cfgmod.resolve(_args([]), env={"LLMCO2_CONFIG": str(toml)})
    assert (c.port, c.log) == (6000, "from-file.jsonl")
    assert cfgmod.resolve(_args(["--no-log-windows"]), env={}).log_windows is False


@pytest.mark.parametrize("argv, env, text, field", [
    (["--pue", "0.9"], {}, None, "pue"),
    # what the pipeline would refuse for every engine stream is refused at start
    (["--pue", "5.5"], {}, None, "pue"),
    (["--lifetime-years", "0"], {}, None, "lifetime_years"),
    (["--carbon-intensity-g-per-kwh", "3000"], {}, None, "carbon_intensity_g_per_kwh"),
    (["--hardware", "/nonexistent/extra.toml"], {}, None, "hardware"),
    (["--fsync", "sometimes"], {}, None, None),  # argparse choices
    ([], {"LLMCO2_PORT": "abc"}, None, "port"),
    ([], {"LLMCO2_PORT": "70000"}, None, "port"),
    (["--tls-cert", "c.pem"], {}, None, "tls_key"),
    ([], {}, "pue = 1.2\nbogus = 3\n", "config:bogus"),
    ([], {}, "pue = [\n", "config"),
])
def test_bad_settings_name_the_field(tmp_path, argv, env, text, field):
    if text is not None:
        f = tmp_path / "c.toml"
        f.write_text(text)
        argv = argv + ["--config", str(f)]
    if field is None:
        with pytest.raises(SystemExit):
            _args(argv)
        return
    with pytest.raises(InputError) as e:
        cfgmod.resolve(_args(argv), env=env)
    assert e.value.field == field


def test_serve_help_lists_every_setting():
    out = subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", "serve", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in cfgmod._FIELDS:
        assert "--" + name.replace("_", "-") in out
        assert "LLMCO2_" + name.upper() in out.replace("\n", "").replace(" ", "")


def test_serve_bad_flag_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", "serve", "--pue", "0.5", "--log",
                           str(tmp_path / "c.jsonl")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "pue" in proc.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI needed to make a test certificate")
def test_tls(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    with SidecarThread(make_config(tmp_path, tls_cert=str(cert), tls_key=str(key))) as sc:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        channel = grpc.secure_channel(sc.address, creds)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        assert next(stub.StreamEvents(iter([identity()]))).stream_id == "engine-1"
        channel.close()
        plain = grpc.insecure_channel(sc.address)  # a plaintext client cannot talk to it
        with pytest.raises(grpc.RpcError):
            next(sidecar_pb2_grpc.CarbonSidecarStub(plain).StreamEvents(iter([identity()]), timeout=3))
        plain.close()
        em = Emitter(EngineInfo(engine_name="t", model_name="meta-llama/Llama-2-7b-hf", gpu="A100", instance_id="tls"),
                     EmitterConfig(target=sc.address, tls_root_cert=str(cert)))
        em.emit_step(1, 0.0, 0.01, ["a"], [3], [0], [3])
        assert em.flush(10)
        em.close()
