"""``mintsoft-bridge sync``: every new Mintsoft order enrolled (its connect action pointed at
the bridge) and every webhook Mintsoft failed to deliver recovered from its API.

One concern per module: :mod:`.clock` (Mintsoft's offset-less local times), :mod:`.state`
(the SQLite record), :mod:`.api` (throttled Mintsoft calls), :mod:`.scan` (what changed since
the cursors), :mod:`.enrol`, :mod:`.reconcile`, :mod:`.archive` (what the archive holds),
:mod:`.runner` (a pass, the loop, backfill) and :mod:`.status`.
"""
