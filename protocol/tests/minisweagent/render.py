"""Renders test cases with mini-swe-agent's own code, for protocol/tests/minisweagent.rs.

Run with the Python of a venv where mini-swe-agent is installed:
    python render.py CONFIG.yaml < cases.json > results.json
Cases and results are JSON (see the Rust test). Nothing here re-implements mini-swe-agent:
its agent, environment and model classes render every message; only the model's network
call and `docker` itself are replaced (the environment's `subprocess.run`).
"""

import json
import subprocess
import sys
import types

import yaml

# mini-swe-agent prints banners to standard output on import: keep them off the results.
RESULTS = sys.stdout
sys.stdout = sys.stderr

import minisweagent  # noqa: E402
from minisweagent.environments import docker as docker_mod  # noqa: E402

VERSION = minisweagent.__version__
V1 = VERSION.startswith("1.")
CONTAINER_ID = "c0ffee" * 10 + "beef"


class FakeRun:
    """What `subprocess.run` in mini's docker environment returns or raises next."""

    next = None

    @classmethod
    def run(cls, cmd, **kwargs):
        kind, output, returncode = cls.next
        if kind == "timeout":
            raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout"), output=output.encode())
        return subprocess.CompletedProcess(cmd, returncode, stdout=output)


docker_mod.subprocess = types.SimpleNamespace(
    run=FakeRun.run,
    TimeoutExpired=subprocess.TimeoutExpired,
    CompletedProcess=subprocess.CompletedProcess,
    PIPE=subprocess.PIPE,
    STDOUT=subprocess.STDOUT,
    Popen=lambda *args, **kwargs: None,  # the environment's cleanup: there is no container
)


def make_env(env_config):
    env = object.__new__(docker_mod.DockerEnvironment)
    cfg = {k: v for k, v in env_config.items() if k != "environment_class"}
    env.config = docker_mod.DockerEnvironmentConfig(image="fixture-image", **cfg)
    env.container_id = CONTAINER_ID
    env.logger = None
    return env


def main():
    config = yaml.safe_load(open(sys.argv[1]))
    cases = json.load(sys.stdin)
    env = make_env(config.get("environment", {}))
    model_config = dict(config.get("model", {}))
    if V1:
        from minisweagent.agents.default import DefaultAgent, ExecutionTimeoutError, FormatError, Submitted
        from minisweagent.models.litellm_model import LitellmModel

        model_config.pop("model_class", None)
        model = LitellmModel(**model_config)
        agent = DefaultAgent(model, env, **config.get("agent", {}))
    else:
        from minisweagent.agents.default import DefaultAgent
        from minisweagent.exceptions import FormatError, Submitted
        from minisweagent.models import get_model

        model = get_model(config=model_config)
        agent = DefaultAgent(model, env, **config.get("agent", {}))
    out = {"version": VERSION, "first_messages": [], "observations": [], "format_errors": [], "timeouts": [],
           "submissions": []}

    for task in cases["tasks"]:
        agent.extra_template_vars = {"task": task}
        if V1:
            system = agent.render_template(agent.config.system_template)
            instance = agent.render_template(agent.config.instance_template)
        else:
            system = agent._render_template(agent.config.system_template)
            instance = agent._render_template(agent.config.instance_template)
        out["first_messages"].append([system, instance])
    agent.extra_template_vars = {"task": cases["tasks"][0]}

    def run_action(command):
        """mini's own execution of one action: the observation's text, or a timeout's, or the submission."""
        if V1:
            try:
                output = agent.execute_action({"action": command})
            except ExecutionTimeoutError as e:
                return {"timeout": str(e)}
            except Submitted as e:
                return {"submission": str(e)}
            return {"observation": agent.render_template(agent.config.action_observation_template, output=output)}
        try:
            output = env.execute({"command": command})
        except Submitted as e:
            return {"submission": e.messages[0]["extra"]["submission"]}
        message = {"extra": {"actions": [{"command": command, "tool_call_id": "call_1"}]}}
        msgs = model.format_observation_messages(message, [output], agent.get_template_vars())
        key = "timeout" if output["returncode"] == -1 and output.get("exception_info") else "observation"
        return {key: msgs[0]["content"]}

    for case in cases["observations"]:
        FakeRun.next = ("ok", case["output"], case["returncode"])
        out["observations"].append(run_action(case["command"]).get("observation"))
    for case in cases["timeouts"]:
        FakeRun.next = ("timeout", case["output"], -1)
        out["timeouts"].append(run_action(case["command"]).get("timeout"))
    for case in cases["submissions"]:
        FakeRun.next = ("ok", case["output"], case["returncode"])
        out["submissions"].append(run_action("echo").get("submission"))

    for case in cases["format_errors"]:
        if case.get("tool_calls") is not None:
            if V1 or not hasattr(model, "_parse_actions") or "textbased" in type(model).__name__.lower():
                out["format_errors"].append(None)
                continue
            from minisweagent.models.utils.actions_toolcall import parse_toolcall_actions

            calls = [types.SimpleNamespace(id=c["id"], function=types.SimpleNamespace(**c["function"]))
                     for c in case["tool_calls"]]
            try:
                parse_toolcall_actions(calls, format_error_template=model.config.format_error_template,
                                       template_kwargs={"finish_reason": case["finish_reason"]})
                out["format_errors"].append(None)
            except FormatError as e:
                out["format_errors"].append(e.messages[0]["content"])
            continue
        if V1:
            try:
                agent.parse_action({"content": case["content"]})
                out["format_errors"].append(None)
            except FormatError as e:
                out["format_errors"].append(str(e))
            continue
        if not hasattr(model.config, "action_regex"):
            out["format_errors"].append(None)
            continue
        response = types.SimpleNamespace(choices=[types.SimpleNamespace(
            message=types.SimpleNamespace(content=case["content"]), finish_reason=case["finish_reason"])])
        try:
            model._parse_actions(response)
            out["format_errors"].append(None)
        except FormatError as e:
            out["format_errors"].append(e.messages[0]["content"])
    json.dump(out, RESULTS)


if __name__ == "__main__":
    main()
