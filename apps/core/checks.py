from django.core.checks import Error, Tags, Warning, register

from apps.core.envspec import RECOMMENDED, blocking_findings, inspect_environment


@register(Tags.security, deploy=True)
def production_environment(app_configs, **kwargs):
    findings = inspect_environment()
    blocking = {f.name for f in blocking_findings(findings)}
    messages = []
    for number, finding in enumerate(findings, start=1):
        if finding.name in blocking:
            problem = finding.problem or "is not set"
            messages.append(Error(f"{finding.name} {problem}", hint="see .env.example", id=f"wxcs.E{number:03d}"))
        elif finding.group == RECOMMENDED and not finding.present:
            messages.append(Warning(f"{finding.name} is not set", hint="see .env.example", id=f"wxcs.W{number:03d}"))
    return messages
