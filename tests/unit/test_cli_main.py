"""`imgstream stack status --json` / `stack up` print their report with secrets masked."""
from streaming.cli.main import _masked


def test_secret_values_are_masked_at_any_depth_and_nothing_else_changes():
    report = {"s3": {"endpoint": "http://127.0.0.1:9000", "access_key": "AKIA", "secret_key": "s3-canary",
                     "healthy": True, "pid": 12},
              "kafka": {"sasl": {"password": "pw-canary", "username": "svc"}, "pids": [1, 2]},
              "healthy": True}
    masked = _masked(report)
    assert "canary" not in repr(masked)
    assert masked["s3"]["secret_key"] == "***" and masked["kafka"]["sasl"]["password"] == "***"
    assert masked["s3"]["access_key"] == "AKIA" and masked["kafka"]["pids"] == [1, 2] and masked["healthy"] is True
    assert report["s3"]["secret_key"] == "s3-canary"  # the caller's report is left as it was
