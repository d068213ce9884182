"""How much text and how many items pgcurator writes into Kubernetes objects and messages.

One place for the numbers, each with where it comes from: a limit of the API server (a longer
value is rejected), or pgcurator's own choice (status stays readable in `kubectl describe`, and
small: every status lives in etcd, whose whole object is limited to 1.5 MiB).
"""

from __future__ import annotations

# Kubernetes: an Event's message/note is at most 1 KiB (events.k8s.io/v1 validation,
# NoteLengthLimit = 1024); core/v1 Events are kept to the same so both views agree.
EVENT_MESSAGE = 1024
# Ours: metav1.Condition allows 32768 characters; 2000 keeps a condition one screen long.
CONDITION_MESSAGE = 2000
# Kubernetes: a resource name used as a label or DNS name is a DNS-1123 label, at most 63.
K8S_NAME = 63
# Ours: one SQL statement, query, error or API reason echoed into a status field or a log line.
STATUS_TEXT = 300
# Ours: a longer explanation passed through from elsewhere (cert-manager's message, an advised
# query, an unreachable API server's error).
DETAIL_TEXT = 500
# Ours: the planner's notes listed in a status.
STATUS_NOTES = 20
# Ours: examples shown of a longer list (validation errors, statements of a step, notices).
SHOWN_ITEMS = 5
# Our choice: items a status list (runs, drift, undeclared indexes) keeps, so the object stays small.
STATUS_LIST = 50
# Ours: column-statistics entries a DatabaseMonitor status lists (the largest tables' columns).
STATUS_COLUMNS = 200
# Ours: how much of a rejected input is quoted back in an error (enough to recognise it, never
# a whole pasted secret or file).
INPUT_ECHO = 40
