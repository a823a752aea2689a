"""Tests of zeroboot_client against a real `zeroboot-wasm serve` (tests/clients.rs starts one).

    ZEROBOOT_URL=http://127.0.0.1:8080 ZEROBOOT_KEY=... ZEROBOOT_GUESTS=guests/target/wasm32-wasip1/release \\
        python3 clients/python/test_zeroboot_client.py

ZEROBOOT_GUESTS is the directory `bash scripts/build-guests.sh` prints.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zeroboot_client import ApiError, Client  # noqa: E402

URL = os.environ.get("ZEROBOOT_URL", "http://127.0.0.1:8080")
KEY = os.environ.get("ZEROBOOT_KEY")
GUESTS = os.environ.get("ZEROBOOT_GUESTS", "")


def guest(name):
    return os.path.join(GUESTS, f"{name}.wasm")


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.zb = Client(URL, api_key=KEY)
        cls.hello = cls.zb.upload_tool(guest("hello"), name="hello", description="Says hello")
        cls.args_env = cls.zb.upload_tool(guest("args_env"), name="args_env")

    def test_health(self):
        h = self.zb.health()
        self.assertEqual(h["status"], "ok", h)

    def test_upload_is_idempotent_and_listed(self):
        again = self.zb.upload_tool(open(guest("hello"), "rb").read(), name="hello")
        self.assertEqual(again["id"], self.hello["id"])
        self.assertEqual(self.hello["kind"], "command")
        self.assertEqual(self.hello["description"], "Says hello")
        ids = {t["id"] for t in self.zb.tools()}
        self.assertIn(self.hello["id"], ids)
        self.assertEqual(self.zb.tool(self.args_env["id"])["name"], "args_env")

    def test_run_with_args_env_and_stdin(self):
        out = self.zb.run(self.args_env["id"], args=["a", "b c"], env={"K": "v"})
        self.assertEqual(out["status"], "exited", out)
        self.assertEqual(out["exit_code"], 0)
        self.assertIn("arg[1]=a\narg[2]=b c\n", out["stdout"])
        self.assertIn("env:K=v\n", out["stdout"])
        echo = self.zb.upload_tool(guest("echo"), name="echo")
        self.assertEqual(self.zb.run(echo["id"], stdin="piped")["stdout"], "piped")
        self.assertEqual(self.zb.run(echo["id"], stdin=b"\x00\xff")["stdout_base64"], "AP8=")

    def test_batch_in_order(self):
        results = self.zb.batch(self.args_env["id"], [Client.task([str(i)]) for i in range(5)])
        self.assertEqual(len(results), 5)
        for i, r in enumerate(results):
            self.assertIn(f"arg[1]={i}\n", r["stdout"])

    def test_timeout_is_an_outcome(self):
        spin = self.zb.upload_tool(guest("spin"), name="spin")
        out = self.zb.run(spin["id"], limits={"timeout_ms": 200})
        self.assertEqual(out["status"], "timeout", out)

    def test_exec_snippets(self):
        py = self.zb.exec("print(6 * 7)", language="python")
        self.assertEqual(py["stdout"], "42\n", py)
        self.assertEqual(py["exit_code"], 0)
        js = self.zb.exec("console.log('js ' + (2 + 3))", language="javascript")
        self.assertEqual(js["stdout"], "js 5\n", js)
        both = self.zb.exec_batch(
            [{"code": "print(1)", "language": "python"}, {"code": "console.log(2)", "language": "node"}]
        )
        self.assertEqual([r["stdout"] for r in both], ["1\n", "2\n"])

    def test_errors_raise(self):
        with self.assertRaises(ApiError) as e:
            self.zb.tool("0" * 64)
        self.assertEqual(e.exception.status, 404)
        with self.assertRaises(ApiError) as e:
            self.zb.upload_tool(b"not wasm")
        self.assertEqual(e.exception.status, 400)
        with self.assertRaises(ApiError) as e:
            self.zb.run(self.hello["id"], bogus=1)
        self.assertEqual(e.exception.status, 400)
        self.assertIn("bogus", e.exception.message)
        with self.assertRaises(ApiError) as e:
            Client(URL, api_key="not-the-key-0123456789").tools()
        self.assertEqual(e.exception.status, 401)

    def test_delete(self):
        t = self.zb.upload_tool(guest("exit_code"), name="exit_code")
        self.zb.delete_tool(t["id"])
        with self.assertRaises(ApiError) as e:
            self.zb.run(t["id"])
        self.assertEqual(e.exception.status, 404)

    def test_metrics(self):
        self.assertIn("# TYPE", self.zb.metrics())


if __name__ == "__main__":
    unittest.main(verbosity=2)
