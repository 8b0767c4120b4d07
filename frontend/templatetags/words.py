"""``{{ value|words }}``: a stored snake_case name (a bucket, a layer) as the words a person reads,
the same function the charts' legends use (frontend.charts.words)."""

from django import template

from frontend import charts

register = template.Library()


@register.filter
def words(value: object) -> str:
    return charts.words(str(value))
