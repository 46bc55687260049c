"""The operator control plane: ``galpipe control`` (JSON API and web console) and ``galpipe ctl``.

Who an operator is and what they may do is the cluster's business: a bearer token is checked
with a ``TokenReview`` and each action with a ``SubjectAccessReview`` against the ``galpipe.io``
API group; every change is written to the audit log and as a Kubernetes Event.
"""
