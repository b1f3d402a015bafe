"""Reads an exported trajectory with mini-swe-agent 2.x's own code, for
orchestrator/tests/mini_export.rs:
    python load_and_replay.py TRAJ.json BASE_URL
1. mini's trajectory inspector loads the file and shows every step (headless);
2. mini's LiteLLM model sends the conversation (without the exit message) to BASE_URL, as it
   does when it continues a trajectory, and gets an answer.
Prints a JSON summary.
"""

import asyncio
import json
import os
import sys
from pathlib import Path

RESULTS = sys.stdout
sys.stdout = sys.stderr  # mini-swe-agent prints banners on import

os.environ.setdefault("MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT", "1")

from minisweagent.exceptions import FormatError  # noqa: E402
from minisweagent.models.litellm_textbased_model import LitellmTextbasedModel  # noqa: E402
from minisweagent.models.utils.content_string import get_content_string  # noqa: E402
from minisweagent.run.utilities.inspector import TrajectoryInspector  # noqa: E402


async def inspect(path: Path) -> dict:
    app = TrajectoryInspector([path])
    shown = []
    async with app.run_test() as pilot:
        for _ in range(app.n_steps):
            shown.append(app.title)
            await pilot.press("l")  # next step
        await pilot.pause()
    return {"messages": len(app.messages), "steps": app.n_steps, "titles": shown,
            "contents": [get_content_string(m) for m in app.messages]}


def main():
    path, base_url = Path(sys.argv[1]), sys.argv[2]
    data = json.loads(path.read_text())
    out = {"inspector": asyncio.run(inspect(path))}
    model = LitellmTextbasedModel(
        model_name="openai/steer-replay",
        model_kwargs={"api_base": base_url, "api_key": "not-a-key"},
        cost_tracking="ignore_errors",
    )
    conversation = [m for m in data["messages"] if m["role"] != "exit"]
    try:
        answer = model.query(conversation)
        out["replay"] = {"ok": True, "content": answer["content"], "actions": answer["extra"]["actions"]}
    except FormatError as e:
        out["replay"] = {"ok": True, "format_error": e.messages[0]["content"]}
    except Exception as e:  # the endpoint refused: what it said
        out["replay"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    json.dump(out, RESULTS)


if __name__ == "__main__":
    main()
