from tests.api.conftest import anon, make_agent, make_person, nobody, operator, viewer  # noqa: F401
