"""Run docs/gitops/argocd-health.lua the way Argo CD does, on tests/gitops/samples.

Argo CD (util/lua/lua.go) runs a health script from argocd-cm in gopher-lua
(Lua 5.1) with SkipOpenLibs, then opens only package, base, table and a "safe"
os (time, date); the object is the global ``obj``; the script's return value is
JSON-encoded into {status, message}, and a status outside Healthy, Progressing,
Degraded, Suspended, Missing, Unknown becomes Unknown. Here the same script runs
in lupa's Lua 5.1 runtime (PUC Lua, not gopher-lua) with the same libraries.

Run this file directly to regenerate docs/gitops/argocd-values-snippet.yaml.
"""

from __future__ import annotations

import pathlib
import sys

import pytest
import yaml

lupa = pytest.importorskip("lupa")
from lupa import lua51  # noqa: E402  (Lua 5.1 semantics, like gopher-lua)

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPT = REPO / "docs" / "gitops" / "argocd-health.lua"
SNIPPET = REPO / "docs" / "gitops" / "argocd-values-snippet.yaml"
SAMPLES = sorted((HERE / "samples").glob("*.yaml"))
CM_KEY = "resource.customizations.health.selftaught.dev_SelfTaughtRun"

VALID_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# What a script from argocd-cm can reach: base, package, table, os.time/os.date.
SANDBOX = """
debug.setmetatable("", nil)  -- without the string library there are no ("s"):methods()
string, math, io, debug, coroutine, python = nil, nil, nil, nil, nil, nil
os = {time = os.time, date = os.date}
for _, name in ipairs({"string", "math", "io", "debug", "coroutine", "python"}) do
  package.loaded[name] = nil
end
package.loaded.os = os
"""


def new_runtime():
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua.execute(SANDBOX)
    return lua


def to_lua(lua, value):
    """JSON-like Python data -> Lua value, as Argo CD's decodeValue does it:
    maps -> tables with string keys, lists -> 1-based arrays, null -> nil."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object key {key!r} is not a string")
            if item is not None:
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for i, item in enumerate(value, start=1):
            if item is not None:
                table[i] = to_lua(lua, item)
        return table
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    # e.g. an unquoted timestamp that YAML turned into a datetime: the API
    # server would hand Argo CD a string, so the sample is wrong.
    raise TypeError(f"{value!r} ({type(value).__name__}) is not JSON data")


def run_health(obj: dict, script: str | None = None) -> dict:
    lua = new_runtime()
    lua.globals().obj = to_lua(lua, obj)
    hs = lua.execute(script if script is not None else SCRIPT.read_text())
    assert lua51.lua_type(hs) == "table", "expect table output from Lua script"
    status = hs["status"] or ""
    message = hs["message"] or ""
    if status not in VALID_STATUSES:
        return {"status": "Unknown", "message": "Lua returned an invalid health status"}
    return {"status": status, "message": message}


def render_snippet(script: str) -> str:
    body = "".join(("      " + line if line else "") + "\n" for line in script.splitlines())
    return (
        "# GENERATED from argocd-health.lua by tests/gitops/test_argocd_health.py\n"
        "# (python tests/gitops/test_argocd_health.py rewrites it). Do not edit.\n"
        "#\n"
        "# Values for the argo-cd Helm chart: everything under configs.cm goes into\n"
        "# the argocd-cm ConfigMap. Without Helm, put the same key under data: of\n"
        "# argocd-cm in the Argo CD namespace.\n"
        "configs:\n"
        "  cm:\n"
        f"    {CM_KEY}: |\n"
        f"{body}"
    )


def load(path: pathlib.Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_health_verdict(sample):
    case = load(sample)
    assert run_health(case["input"]) == case["healthStatus"]


def test_samples_cover_the_brief():
    names = {p.stem for p in SAMPLES}
    assert {"running", "suspended", "succeeded", "failed", "stale-generation",
            "refused-edit", "no-status"} <= names


def test_stage_and_iteration_when_no_message():
    case = load(HERE / "samples" / "running.yaml")
    del case["input"]["status"]["message"]
    assert run_health(case["input"]) == {"status": "Progressing", "message": "iteration 2: judge"}


def test_generation_given_as_string_still_compares():
    # gopher-lua gets json.Number values as strings; tonumber() copes.
    case = load(HERE / "samples" / "stale-generation.yaml")
    case["input"]["status"]["observedGeneration"] = "3"
    assert run_health(case["input"])["message"] == "waiting for the operator to observe generation 4"


def test_sandbox_has_no_string_library():
    # Guards the emulation itself: a script using string.* must fail here,
    # as it would in Argo CD without useOpenLibs.
    for script in ('return {status = string.format("%s", "Healthy")}',
                   'return {status = ("healthy"):upper()}'):
        with pytest.raises(lua51.LuaError):
            run_health({}, script)


def test_invalid_status_becomes_unknown():
    assert run_health({}, 'return {status = "Fine"}') == {
        "status": "Unknown", "message": "Lua returned an invalid health status"}


def test_snippet_embeds_script_verbatim():
    script = SCRIPT.read_text()
    assert script.endswith("\n") and not script.endswith("\n\n")
    assert SNIPPET.read_text() == render_snippet(script), (
        "argocd-values-snippet.yaml is stale: run python tests/gitops/test_argocd_health.py")
    assert yaml.safe_load(SNIPPET.read_text())["configs"]["cm"][CM_KEY] == script


if __name__ == "__main__":
    SNIPPET.write_text(render_snippet(SCRIPT.read_text()))
    print(f"wrote {SNIPPET}", file=sys.stderr)
