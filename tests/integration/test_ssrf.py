"""SSRF through the real job: forbidden addresses are refused without a connection.

Set-up, in this test process, on loopback:
* listeners that only count accepted connections, on 127.0.0.1, 127.0.0.2 and [::1]: the
  "internal services" (think 169.254.169.254) nothing may reach;
* a web server on 127.0.0.3, the ONE trusted address (`http_trusted_networks=127.0.0.3/32`):
  it serves a picture and redirects to the forbidden listeners.

The job allows http(s) to ANY host and port (`allowed_hosts=*:*`), so the host allowlist
refuses nothing here: what is under test is the address guard, applied to the literal host,
to what a name resolves to (localhost -> 127.0.0.1) and again to every redirect hop. The
positive controls (a picture, directly and through a redirect) show that the trusted server
is reachable and redirects are followed, so a refused hop is refused for its address, and
the web server's request log shows that each redirect was served (the first hop happened).
Addresses nobody here can listen on (10.0.0.1, 169.254.169.254, ...) must fail with
address_not_allowed: a connection attempt would instead end, after the fetch timeout, as
fetch_failed.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from streaming.ops import kafka_io
from tests.corpus import corpus
from tests.integration.job_support import num_restarts, outcomes, results_when_complete, start_job, stop_job
from tests.net_support import CountingListener, Reply, ScriptedHttpServer, redirect

TRUSTED = "127.0.0.3"
MAX_REDIRECTS = 3


@pytest.fixture(scope="module")
def net():
    listeners = {host: CountingListener(host) for host in ("127.0.0.1", "127.0.0.2", "::1")}
    picture = (corpus.IMAGES / corpus.GOOD_IMAGE).read_bytes()
    web = ScriptedHttpServer({"/image.jpg": Reply(200, picture, {"Content-Type": "image/jpeg"}),
                              "/via": redirect("/image.jpg"), "/loop": redirect("/loop")}, host=TRUSTED)
    a, b, c = (listeners[h].port for h in ("127.0.0.1", "127.0.0.2", "::1"))
    hops = {
        "loopback": f"http://127.0.0.2:{b}/x", "localhost": f"http://localhost:{a}/x",
        "ipv6-loopback": f"http://[::1]:{c}/x", "ipv4-mapped": f"http://[::ffff:127.0.0.1]:{a}/x",
        "scheme-relative": f"//127.0.0.2:{b}/x", "metadata": "http://169.254.169.254/latest/meta-data/",
        "private": "http://10.0.0.1/x", "decimal": f"http://2130706433:{a}/x", "file": "file:///etc/passwd",
    }
    for name, location in hops.items():
        web.routes[f"/to/{name}"] = redirect(location)
    yield listeners, web, (a, b, c)
    web.close()
    for listener in listeners.values():
        listener.close()


def cases(web, ports):
    a, b, c = ports
    direct = {
        f"http://127.0.0.2:{b}/x": "address_not_allowed", f"http://127.0.0.1:{a}/x": "address_not_allowed",
        f"https://127.0.0.1:{a}/x": "address_not_allowed", f"http://localhost:{a}/x": "address_not_allowed",
        f"http://[::1]:{c}/x": "address_not_allowed", f"http://[::ffff:127.0.0.1]:{a}/x": "address_not_allowed",
        f"http://[::ffff:7f00:2]:{b}/x": "address_not_allowed", f"http://0.0.0.0:{a}/x": "address_not_allowed",
        f"http://[::]:{c}/x": "address_not_allowed",
        f"http://2130706433:{a}/x": "uri_not_allowed", f"http://0x7f000001:{a}/x": "uri_not_allowed",
        f"http://0177.0.0.1:{a}/x": "uri_not_allowed", f"http://127.1:{a}/x": "uri_not_allowed",
        f"http://admin:pw@127.0.0.2:{b}/x": "uri_not_allowed",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/": "address_not_allowed",
        "http://[fd00:ec2::254]/latest/meta-data/": "address_not_allowed",
        "http://100.100.100.200/latest/meta-data/": "address_not_allowed",
        "http://10.0.0.1/x": "address_not_allowed", "http://172.16.0.1/x": "address_not_allowed",
        "http://192.168.0.1/x": "address_not_allowed", "http://224.0.0.1/x": "address_not_allowed",
    }
    redirected = {web.url(f"/to/{name}"): code for name, code in {
        "loopback": "address_not_allowed", "localhost": "address_not_allowed",
        "ipv6-loopback": "address_not_allowed", "ipv4-mapped": "address_not_allowed",
        "scheme-relative": "address_not_allowed", "metadata": "address_not_allowed",
        "private": "address_not_allowed", "decimal": "uri_not_allowed", "file": "uri_not_allowed"}.items()}
    controls = {web.url("/image.jpg"): "prediction", web.url("/via"): "prediction",
                web.url("/loop"): "too_many_redirects"}
    return {**direct, **redirected, **controls}


@pytest.fixture(scope="module")
def ssrf_job(layout, prepared, pipeline_config, net):
    config = dataclasses.replace(pipeline_config, allowed_schemes=("s3", "http", "https"), allowed_hosts=("*:*",),
                                 http_trusted_networks=(f"{TRUSTED}/32",), max_redirects=MAX_REDIRECTS,
                                 fetch_retries=0, fetch_timeout_s=5.0)
    job = start_job(layout, prepared, config, "ssrf")
    yield job
    stop_job(layout, job)


def test_forbidden_addresses_are_refused_without_a_connection(layout, ssrf_job, net):
    listeners, web, ports = net
    expected = cases(web, ports)
    events = [{"id": f"ssrf-{i}", "uri": uri} for i, uri in enumerate(expected)]
    kafka_io.publish(layout.kafka_bootstrap, ssrf_job.requests_topic, events)
    results = results_when_complete(layout.kafka_bootstrap, ssrf_job.results_topic, len(events))
    by_id = {r["id"]: r for r in results}
    got = {e["uri"]: (by_id[e["id"]]["error"]["code"] if "error" in by_id[e["id"]] else "prediction")
           for e in events if e["id"] in by_id}
    assert got == expected, json.dumps({u: (got.get(u), c) for u, c in expected.items() if got.get(u) != c}, indent=1)
    assert sum(outcomes(results).values()) == len(events)
    assert {host: listener.count for host, listener in listeners.items()} == {"127.0.0.1": 0, "127.0.0.2": 0, "::1": 0}
    served = [path for path, _headers in web.requests]
    assert all(served.count(f"/to/{name}") == 1 for name in ("loopback", "localhost", "metadata", "file"))
    assert served.count("/loop") == MAX_REDIRECTS + 1 and served.count("/image.jpg") == 2
    assert num_restarts(layout, ssrf_job.id) == 0
