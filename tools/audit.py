"""``make audit``: pip-audit over the installed dependencies (the project's venv), telling apart
"no known vulnerabilities" from "could not be audited" (pip-audit alone reports the latter as
a pass: a vulnerability service that can't be reached must never look like a clean bill).

Exit status: 0 every dependency audited and none vulnerable; 1 known vulnerabilities (listed);
3 some dependencies could not be audited (the vulnerability service unreachable or unaware of
them; listed); 2 pip-audit itself failed."""

import json
import subprocess
import sys

UNAUDITED = 3


def main() -> int:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "--format",
            "json",
            "--progress-spinner",
            "off",
            "--skip-editable",  # the project itself
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit failed (exit {result.returncode}):\n{result.stderr}", file=sys.stderr)
        return 2
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    if vulnerable:
        return 1
    if skipped:
        print(
            f"AUDIT INCOMPLETE: {len(skipped)} of {len(dependencies)} dependencies could not be "
            "audited (is the vulnerability service reachable?):",
            file=sys.stderr,
        )
        for dep in skipped:
            print(f"  {dep['name']}: {dep['skip_reason']}", file=sys.stderr)
        return UNAUDITED
    print(f"pip-audit: {len(dependencies)} dependencies audited, no known vulnerabilities")
    return 0


if __name__ == "__main__":
    sys.exit(main())
