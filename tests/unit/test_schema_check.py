"""The schema check's verdict (ops/schema_check.py) follows Synapse's start-up
rules: refused only when the database's compat version is above the image's
SCHEMA_VERSION; an older image within the window is a rollback Synapse allows."""

from ops.schema_check import DatabaseSchema, ImageSchema, verdict

REF = "matrixdotorg/synapse:vX"


def test_an_image_the_database_is_too_new_for_is_refused():
    ok, said = verdict(REF, ImageSchema(92, 84, "1.140.0"), DatabaseSchema(96, 93))
    assert not ok and said.startswith("refused: ") and "Nothing was replaced" in said
    assert "schema 92" in said and "93 or newer" in said and "docs/backups.md" in said


def test_upgrade_rollback_and_same_are_allowed_and_said():
    ok, said = verdict(REF, ImageSchema(94, 84, "1.163.2"), DatabaseSchema(92, 84))
    assert ok and said.startswith("upgrade: ") and "from schema 92 to 94" in said
    ok, said = verdict(REF, ImageSchema(92, 84, "1.140.0"), DatabaseSchema(94, 84))
    assert ok and said.startswith("rollback within"), said
    # The edge: compat equal to the image's schema is still usable (Synapse: `>`).
    ok, _ = verdict(REF, ImageSchema(92, 84, "1.140.0"), DatabaseSchema(94, 92))
    assert ok
    ok, said = verdict(REF, ImageSchema(94, 84, "1.163.2"), DatabaseSchema(94, 84))
    assert ok and said.startswith("same schema")
    # A database without a compat version (very old Synapse) is never refused.
    assert verdict(REF, ImageSchema(92, 84, "1.140.0"), DatabaseSchema(40, None))[0]
