"""AWX's rules for a survey, as AWX applies them (written from awx/api/views/__init__.py JobTemplateSurveySpec.
_validate_spec_data, awx/main/models/mixins.py SurveyJobTemplateMixin._survey_element_validation and
_update_unified_job_kwargs, awx/main/constants.py SURVEY_TYPE_MAPPING): a spec AWX's API would refuse, and the answers
AWX would refuse at launch, give a non-empty list of errors here.
"""

from __future__ import annotations

# Question type -> the Python types its default (and answer) may have.
SURVEY_TYPES = {'text': (str,), 'textarea': (str,), 'password': (str,), 'multiplechoice': (str,),
                'multiselect': (str,), 'integer': (int,), 'float': (float, int)}


def _choices(question):
    choices = question.get('choices', [])
    if isinstance(choices, str):
        return [c for c in choices.splitlines() if c.strip()]
    return list(choices)


def spec_errors(spec):
    """What AWX's API says when the spec is POSTed to .../survey_spec/ (every error, not only the first)."""
    errors = []
    if not isinstance(spec, dict):
        return ['the survey spec is not a JSON object']
    for field, types in (('name', str), ('description', str), ('spec', list)):
        if field not in spec:
            errors.append("Field '%s' is missing from survey spec." % field)
        elif not isinstance(spec[field], types):
            errors.append("Expected %s for field '%s'." % (types.__name__, field))
    if isinstance(spec.get('spec'), list) and not spec['spec']:
        errors.append("'spec' doesn't contain any items.")
    if errors:
        return errors
    seen = set()
    for idx, question in enumerate(spec['spec']):
        if not isinstance(question, dict):
            errors.append('Survey question %d is not a json object.' % idx)
            continue
        bad = False
        for field in ('type', 'question_name', 'variable', 'required'):
            wanted = bool if field == 'required' else str
            if field not in question:
                errors.append("'%s' missing from survey question %d" % (field, idx))
                bad = True
            elif not isinstance(question[field], wanted):
                errors.append("'%s' in survey question %d expected to be %s." % (field, idx, wanted.__name__))
                bad = True
        if bad:
            continue
        if question['variable'] in seen:
            errors.append("'variable' '%s' duplicated in survey question %d." % (question['variable'], idx))
        seen.add(question['variable'])
        qtype = question['type']
        if qtype not in SURVEY_TYPES:
            errors.append("'%s' in survey question %d is not one of the allowed question types." % (qtype, idx))
            continue
        default = question.get('default')
        if 'default' in question and default != '' and not isinstance(default, SURVEY_TYPES[qtype]):
            errors.append('Default value %r in survey question %d expected to be %s.' % (default, idx, qtype))
        for key in ('min', 'max'):
            value = question.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                errors.append('The %s limit in survey question %d expected to be integer.' % (key, idx))
        if qtype in ('multiplechoice', 'multiselect'):
            if 'choices' not in question:
                errors.append('Survey question %d of type %s must specify choices.' % (idx, qtype))
            elif isinstance(default, str) and default:
                defaults = [d for d in default.splitlines() if d.strip()]
                if qtype == 'multiplechoice' and len(defaults) > 1:
                    errors.append('Multiple Choice (Single Select) can only have one default value.')
                if any(d not in _choices(question) for d in defaults):
                    errors.append('Default choice must be answered from the choices listed.')
        if isinstance(default, str) and default.startswith('$encrypted$') and qtype != 'password':
            errors.append('$encrypted$ is a reserved keyword for password question defaults (question %d).' % idx)
        # A default is applied at launch only when it passes the question's own checks (min, max, type, choices).
        if default not in (None, '') and answer_errors(question, {question['variable']: default}):
            errors.append('the default of survey question %d breaks its own bounds: %s'
                          % (idx, answer_errors(question, {question['variable']: default})))
    return errors


def answer_errors(question, answers, validate_required=True):
    """What AWX says about the answers to one question at launch (SurveyJobTemplateMixin._survey_element_validation)."""
    var = question['variable']
    present = var in answers
    value = answers.get(var)
    qtype = question['type']
    limits = {k: question.get(k) for k in ('min', 'max') if question.get(k) not in ('', None)}
    if not present:
        return ["'%s' value missing" % var] if question['required'] and validate_required else []
    if qtype in ('text', 'textarea', 'password'):
        if not isinstance(value, str):
            return ["Value %r for '%s' expected to be a string." % (value, var)]
        out = []
        if 'min' in limits and len(value) < int(limits['min']):
            out.append("'%s' value is too small (length %d, at least %s)." % (var, len(value), limits['min']))
        if 'max' in limits and len(value) > int(limits['max']):
            out.append("'%s' value is too large (must be no more than %s)." % (var, limits['max']))
        return out
    if qtype in ('integer', 'float'):
        allowed = (int,) if qtype == 'integer' else (float, int)
        # AWX compares the types exactly, so True is no integer.
        if type(value) not in allowed:  # pylint: disable=unidiomatic-typecheck
            return ["Value %r for '%s' expected to be %s." % (value, var, 'an integer' if qtype == 'integer' else 'numeric')]
        out = []
        if 'min' in limits and value < limits['min']:
            out.append("'%s' value %s is too small (must be at least %s)." % (var, value, limits['min']))
        if 'max' in limits and value > limits['max']:
            out.append("'%s' value %s is too large (must be no more than %s)." % (var, value, limits['max']))
        return out
    if qtype == 'multiselect':
        if not isinstance(value, list):
            return ["'%s' value is expected to be a list." % var]
        return ["Value %r for '%s' expected to be one of %s." % (v, var, _choices(question)) for v in value
                if v not in _choices(question)]
    if qtype == 'multiplechoice' and value not in _choices(question):
        return ["Value %r for '%s' expected to be one of %s." % (value, var, _choices(question))]
    return []


def launch_extra_vars(spec, answers):
    """The extra vars a launch with ``answers`` gets from the survey: each default that passes its question's checks,
    then the answers (SurveyJobTemplateMixin._update_unified_job_kwargs)."""
    extra = {}
    for question in spec['spec']:
        default = question.get('default')
        if default is not None and not answer_errors(question, {question['variable']: default}):
            extra[question['variable']] = default
    extra.update(answers)
    return extra
