"""Writes operator-1.15.0.tsv: every configuration key the Flink Kubernetes Operator 1.15.0 and its
autoscaler read from a FlinkDeployment's flinkConfiguration, with its type and whether it is deprecated.

The operator's jars are not on Maven Central for 1.15.0, so the list comes from its sources at the tag
(the `ConfigOption` constants of AutoScalerOptions, KubernetesOperatorConfigOptions and
KubernetesOperatorMetricOptions) and is cross-checked against the tag's generated configuration docs.
Reproduce it from a clone of apache/flink-kubernetes-operator:

    python deploy/k8s/config-keys/operator_options.py /path/to/flink-kubernetes-operator release-1.15.0 \
        > deploy/k8s/config-keys/operator-1.15.0.tsv

Columns: key, type (the Java type of the option; `enum:a,b,c` for enums), status (`current`,
`deprecated` for a @Deprecated option, `deprecated-for:<key>` for a deprecated or legacy fallback key). A `<name>` in a key stands for any
name (a documented key pattern).
"""
from __future__ import annotations

import html
import re
import subprocess
import sys

SOURCES = {
    "flink-autoscaler/src/main/java/org/apache/flink/autoscaler/config/AutoScalerOptions.java":
        {"autoScalerConfig": "job.autoscaler.", "autoScalerConfigKey": "job.autoscaler.",
         "oldOperatorConfigKey": "kubernetes.operator.job.autoscaler."},
    "flink-kubernetes-operator/src/main/java/org/apache/flink/kubernetes/operator/config/"
    "KubernetesOperatorConfigOptions.java":
        {"operatorConfig": "kubernetes.operator.", "operatorConfigKey": "kubernetes.operator."},
    "flink-kubernetes-operator/src/main/java/org/apache/flink/kubernetes/operator/metrics/"
    "KubernetesOperatorMetricOptions.java":
        {"operatorConfig": "kubernetes.operator.", "operatorConfigKey": "kubernetes.operator."},
}
DOCS = ("docs/layouts/shortcodes/generated/auto_scaler_configuration.html",
        "docs/layouts/shortcodes/generated/kubernetes_operator_config_configuration.html",
        "docs/layouts/shortcodes/generated/kubernetes_operator_metric_configuration.html")
FIELD = re.compile(r"((?:@[\w.]+(?:\([^)]*\))?\s*)*)public static final ConfigOption<(.+?)>\s+(\w+)\s*=\s*(.*?);\n",
                   re.S)
TYPES = {"booleanType": "Boolean", "intType": "Integer", "longType": "Long", "doubleType": "Double",
         "floatType": "Float", "durationType": "Duration", "memoryType": "MemorySize", "stringType": "String",
         "mapType": "Map"}


def show(repo: str, tag: str, path: str) -> str:
    return subprocess.run(["git", "-C", repo, "show", f"{tag}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def key_expr(expr: str, helpers: dict[str, str], consts: dict[str, str], keys: dict[str, str]) -> str:
    expr = expr.strip()
    if found := re.fullmatch(r"(\w+)\(\s*\"([^\"]+)\"\s*\)", expr):
        return helpers[found.group(1)] + found.group(2)
    if found := re.fullmatch(r"\"([^\"]+)\"", expr):
        return found.group(1)
    if found := re.fullmatch(r"(\w+)\s*\+\s*\"([^\"]+)\"", expr):
        return consts[found.group(1)] + found.group(2)
    if found := re.fullmatch(r"(\w+)\.key\(\)\s*\+\s*\"([^\"]+)\"", expr):
        return keys[found.group(1)] + found.group(2)
    raise ValueError(f"cannot read the key expression {expr!r}")


def args_of(expr: str, method: str) -> list[str]:
    """The comma-separated arguments of every `.method(...)` call (no nested commas in these files)."""
    out = []
    for start in [m.end() for m in re.finditer(r"\." + method + r"\(", expr)]:
        depth, i = 1, start
        while depth:
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        out += [a for a in re.split(r",(?![^(]*\))", expr[start:i - 1]) if a.strip()]
    return out


def options(repo: str, tag: str) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for path, helpers in SOURCES.items():
        text = show(repo, tag, path)
        consts = {m.group(1): m.group(2) for m in
                  re.finditer(r"static final String (\w+) =\s*\"([^\"]*)\";", text)}
        consts["K8S_OP_CONF_PREFIX"] = consts.get("K8S_OP_CONF_PREFIX", "kubernetes.operator.")
        keys: dict[str, str] = {}
        for annotations, _, name, expr in FIELD.findall(text):
            first = re.match(r"\s*(\w+(?:\.key)?)\((.*?)\)\s*\n?\s*\.", expr, re.S)
            builder = first.group(1)
            if builder == "ConfigOptions.key":
                key = key_expr(first.group(2), helpers, consts, keys)
            else:
                key = key_expr(f"{builder}({first.group(2)})", helpers, consts, keys)
            keys[name] = key
            kind = next((TYPES[m] for m in re.findall(r"\.(\w+Type)\(", expr) if m in TYPES), None)
            if enum := re.search(r"\.enumType\(([\w.]+)\.class\)", expr):
                kind = "enum:" + enum.group(1)
            if kind is None:
                raise ValueError(f"{path} {name}: no type")
            if ".asList()" in expr:
                kind = f"List<{kind}>"
            found[key] = (kind, "deprecated" if "@Deprecated" in annotations else "current")
            for method in ("withDeprecatedKeys", "withFallbackKeys"):
                for arg in args_of(expr, method):
                    old = key_expr(arg, helpers, consts, keys)
                    found.setdefault(old, (kind, f"deprecated-for:{key}"))
    return found


def main(repo: str, tag: str) -> None:
    found = options(repo, tag)
    documented = {html.unescape(k) for path in DOCS
                  for k in re.findall(r"<td><h5>([^<]+)</h5></td>", show(repo, tag, path))}
    missing = documented - found.keys()
    # documented key patterns (`<listener-name>`) are read elsewhere in the operator: keep them as patterns
    if [k for k in missing if "<" not in k]:
        raise SystemExit(f"documented but not read from the sources: {sorted(missing)}")
    found.update({k: ("String", "current") for k in missing})
    print(f"# Flink Kubernetes Operator {tag}: generated by operator_options.py; do not edit")
    for key in sorted(found):
        print("\t".join((key, *found[key])))


if __name__ == "__main__":
    main(*sys.argv[1:3])
