"""A small valid RFC 8460 report as a dict, for the intake tests that post or mail one."""

from __future__ import annotations


def one_policy_report(report_id: str, *, domain: str, org: str, ok: int, failed: int = 1,
                      result_type: str = "certificate-expired",
                      sending_ip: str | None = None) -> dict:
    """One day (2024-06-01), one enforced STS policy of ``domain`` with one MX, ``ok``
    successful sessions and one failure-details entry of ``failed`` sessions."""
    detail = {"result-type": result_type, "receiving-mx-hostname": f"mx.{domain}",
              "failed-session-count": failed}
    if sending_ip is not None:
        detail["sending-mta-ip"] = sending_ip
    return {"organization-name": org, "report-id": report_id,
            "contact-info": "tlsrpt@sender.example",
            "date-range": {"start-datetime": "2024-06-01T00:00:00Z",
                           "end-datetime": "2024-06-01T23:59:59Z"},
            "policies": [{"policy": {"policy-type": "sts", "policy-domain": domain,
                                     "policy-string": ["version: STSv1", "mode: enforce"],
                                     "mx-host": [f"mx.{domain}"]},
                          "summary": {"total-successful-session-count": ok,
                                      "total-failure-session-count": failed},
                          "failure-details": [detail]}]}
