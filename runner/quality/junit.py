"""Validation results as the file CI systems read: `target/junit.xml`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from runner.quality.spec import MAX_EXAMPLES, ExpectationResult


# -- artifacts ---------------------------------------------------------------------------------
def write_junit(path: Path, results: list[ExpectationResult]) -> None:
    """JUnit XML for CI: one testsuite per relation, one testcase per expectation.

    A failed `error` expectation is a <failure> (an <error> when the check could not run); a
    failed `warn` expectation is <skipped>, so it shows in CI without failing it. Messages carry
    the observed value, the body up to five failing rows as JSON."""
    relations: dict[str, list[ExpectationResult]] = {}
    for res in results:
        relations.setdefault(res.relation, []).append(res)
    root = ET.Element("testsuites", name="arpu")
    for relation, items in relations.items():
        suite = ET.SubElement(root, "testsuite", name=relation)
        for res in items:
            case = ET.SubElement(suite, "testcase", classname=f"arpu.{relation}",
                                 name=res.expectation, time=f"{res.seconds:.4f}")
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="severity", value=res.severity)
            ET.SubElement(props, "property", name="observed", value=res.observed)
            if res.success:
                continue
            if res.severity == "warn":
                tag = "skipped"
            else:
                tag = "error" if res.exception else "failure"
            element = ET.SubElement(case, tag, message=f"[{res.severity}] observed: "
                                    f"{res.observed}", type=res.expectation.split("(")[0])
            element.text = _failure_text(res)
        _count(suite, items)
    _count(root, results)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _count(element: ET.Element, items: list[ExpectationResult]) -> None:
    failed = [r for r in items if not r.success]
    element.set("tests", str(len(items)))
    element.set("failures", str(sum(1 for r in failed if r.severity == "error"
                                    and not r.exception)))
    element.set("errors", str(sum(1 for r in failed if r.severity == "error" and r.exception)))
    element.set("skipped", str(sum(1 for r in failed if r.severity == "warn")))
    element.set("time", f"{sum(r.seconds for r in items):.4f}")


def _failure_text(res: ExpectationResult) -> str:
    lines = [f"{res.relation}: {res.expectation}", f"severity: {res.severity}",
             f"observed: {res.observed}"]
    if res.failing_examples:
        lines.append(f"failing rows (up to {MAX_EXAMPLES}):")
        lines += [json.dumps(row, default=str, sort_keys=True) for row in res.failing_examples]
    return "\n".join(lines)
