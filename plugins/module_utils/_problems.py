# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One shape for every problem a checker of this collection finds, and one way to print a list of them.

A problem is a plain dict (it travels through Ansible facts and JSON unchanged):

- ``code``: a stable, dashed identifier (``subnet-overlap``, ``nccl-dead-variable``). Code that reacts to a
  problem tests the code, never the wording, which may change;
- ``variable``: the inventory variable to change (``spark_cx7_subnets``, ``sglang_server_args['log-level']``);
- ``where``: the hosts or group it concerns, in words (``host spark-02``, ``group vars of hosts a, b``), or None;
- ``hosts``: the host names it concerns (possibly empty);
- ``severity``: ``error`` (the run stops) or ``warning`` (reported only);
- ``message``: the whole sentence a user reads: variable, where, what is wrong, and ``Fix: ...``.

The checkers (``_cluster``, ``_nccl``, ``_sglang``) return lists of these and raise ``ProblemsError`` carrying
all of them at once, so that preflight lists every problem of every stage together.
"""

from __future__ import annotations

import re

_CODE = re.compile(r'^[a-z0-9]+(-[a-z0-9]+)*$')


def kind(value):
    """What a value is, in words a user knows: never a Python type name (Ansible hands over its own subclasses)."""
    if value is None:
        return 'null'
    for types, words in ((bool, 'a boolean'), (int, 'an integer'), (float, 'a number'), (str, 'a string'),
                         (dict, 'a dict'), ((list, tuple, set, frozenset), 'a list')):
        if isinstance(value, types):
            return words
    return 'a value of another kind'


def problem(code, variable, what, fix=None, where=None, hosts=(), severity='error'):
    """A problem dict; ``what`` says what is wrong, ``fix`` what to do about it (both plain sentences)."""
    if not _CODE.match(code):
        raise ValueError('problem code %r is not lower-case and dashed' % (code,))
    return {
        'code': code,
        'variable': variable,
        'where': where,
        'hosts': list(hosts),
        'severity': severity,
        'what': what.rstrip('.'),
        'fix': fix.rstrip('.') if fix else None,
        'message': _sentence(variable, where, what, fix),
    }


def warning(code, variable, what, fix=None, where=None, hosts=()):
    """A problem that is reported and does not stop the run."""
    return problem(code, variable, what, fix=fix, where=where, hosts=hosts, severity='warning')


def _sentence(variable, where, what, fix):
    head = '%s (%s)' % (variable, where) if where else variable
    text = '%s: %s.' % (head, what.rstrip('.'))
    if fix:
        text += ' Fix: %s.' % fix.rstrip('.')
    return text


def located(problems, where, hosts=()):
    """The same problems, each placed at ``where`` (and ``hosts``) unless it already names a place."""
    out = []
    for item in problems:
        if item.get('where'):
            out.append(item)
            continue
        moved = dict(item, where=where, hosts=list(hosts))
        moved['message'] = _sentence(item['variable'], where, item['what'], item['fix'])
        out.append(moved)
    return out


def errors(problems):
    """The problems that stop a run."""
    return [p for p in problems if p.get('severity', 'error') == 'error']


def warnings(problems):
    """The problems that are only reported."""
    return [p for p in problems if p.get('severity') == 'warning']


def codes(problems):
    """The codes of a list of problems, in order (what tests and tasks compare)."""
    return [p['code'] for p in problems]


def format_problems(problems, subject='The cluster description'):
    """One message for a list of problems: a title line, then one numbered line each, ending in its [code]."""
    problems = list(problems)
    count = len(problems)
    lines = ['%s has %d problem%s:' % (subject, count, '' if count == 1 else 's')]
    lines.extend('  %d. %s [%s]' % (i, p['message'], p['code']) for i, p in enumerate(problems, 1))
    return '\n'.join(lines)


class ProblemsError(ValueError):
    """Raised with every problem found, not only the first."""

    subject = 'The cluster description'

    def __init__(self, problems, subject=None):
        self.problems = list(problems)
        if subject:
            self.subject = subject
        super().__init__(format_problems(self.problems, self.subject))
