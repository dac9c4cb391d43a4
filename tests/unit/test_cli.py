"""The console script: a configuration error is one line and exit status 2, never a traceback."""

from __future__ import annotations

from typing import Any


def _serve(tmp_path: Any, **env: str) -> Any:
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("IVIG_CDS_")}
    base.pop("DATABASE_URL", None)
    base.update({"IVIG_CDS_DATABASE_PATH": str(tmp_path / "t.db"), **env})
    return subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", "1"],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_configuration_errors_are_one_line_and_exit_2(tmp_path: Any) -> None:
    cases = [
        ({"IVIG_CDS_DEMO": "yes-please"}, "IVIG_CDS_DEMO"),
        ({"IVIG_CDS_JWT_REQUIRED": "true"}, "IVIG_CDS_JWT_ISSUERS is empty"),
        (
            {"IVIG_CDS_DEMO": "true", "DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1:1/db"},
            "database",
        ),
        (
            {"IVIG_CDS_DEMO": "true", "IVIG_CDS_DATABASE_PATH": "/nonexistent/dir/ivig.db"},
            "database: ",
        ),
        ({"IVIG_CDS_JWT_ISSUERS": '{"https://ehr": "/nonexistent/jwks.json"}'}, "JWKS file"),
        (
            {"IVIG_CDS_JWT_ISSUERS": '{"https://ehr": {"jwks": "/x.json", "jku": "http://e/k"}}'},
            "must be https",
        ),
        ({"IVIG_CDS_JWT_ISSUERS": '{"https://ehr": {"jku": "https://e/k"}}'}, "JWKS: Field"),
    ]
    for env, says in cases:
        done = _serve(tmp_path, **env)
        assert done.returncode == 2, (env, done.stderr[-500:])
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("ivig-cds: cannot start: "), (env, lines[-3:])
        assert says in lines[-1], (env, lines[-1])
        assert "Traceback" not in done.stderr, env
