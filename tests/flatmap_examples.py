"""Every flatmap example of KrakenD's documentation, translated into our `shape:` syntax.

Sources (krakend/krakend-documentation): `backends/flatmap.md` ("Notation by example",
"Practical examples regarding operations", "Example: Extract objects to another level",
"Example: Moving around data in arrays"), its v1.x/v2.0 "Configuration example" (schools,
alumni), and `backends/data-manipulation.md` ("Moving, extracting, or flattening", the same
shipping example). KrakenD's `flatmap_filter` is a list of `{type, args}`; ours is a mapping
whose operations run in a fixed order (move, del, append, ...) or a list of such mappings.
Where KrakenD gives no input or output (the alumni example) the test makes one up and says so.

The test backend (tests/collections_backend.py) serves each `input` at `/doc/<name>`.
"""

from __future__ import annotations

from typing import Any

NOTATION_INPUT: dict[str, Any] = {
    "a": [
        {"b1": [{"c": 1, "d": "foo"}, {"c": 2, "d": "bar"}], "b2": True},
        {"b1": [{"c": 3, "d": "vaz"}]},
    ]
}

NOTATION: list[tuple[str, Any]] = [
    # "Representing some values": KrakenD's notation is our path notation, as it is
    ("a", NOTATION_INPUT["a"]),
    ("a.1", {"b1": [{"c": 3, "d": "vaz"}]}),
    ("a.0.b1.0.d", "foo"),
    ("a.1.b1.0.d", "vaz"),
    ("a.*.b1.*.d", ["foo", "bar", "vaz"]),
    ("a.*.*.*.d", ["foo", "bar", "vaz"]),
]

MOVES: list[tuple[str, str, Any]] = [
    # "Practical examples regarding operations", the rows KrakenD marks correct
    (
        "a.*.b1.*.c",
        "a.*.b1.*.d",  # rename c to d (d was there: the moved c replaces it)
        {"a": [{"b1": [{"d": 1}, {"d": 2}], "b2": True}, {"b1": [{"d": 3}]}]},
    ),
    (
        "a.0.b1.0.c",
        "c",  # extract only c of the first item of the first item
        {
            "a": [
                {"b1": [{"d": "foo"}, {"c": 2, "d": "bar"}], "b2": True},
                {"b1": [{"c": 3, "d": "vaz"}]},
            ],
            "c": 1,
        },
    ),
    (
        "a.*.b1.*.c",
        "a.*.b1.*.c.d.e.f.g",  # add levels
        {
            "a": [
                {
                    "b1": [
                        {"c": {"d": {"e": {"f": {"g": 1}}}}, "d": "foo"},
                        {"c": {"d": {"e": {"f": {"g": 2}}}}, "d": "bar"},
                    ],
                    "b2": True,
                },
                {"b1": [{"c": {"d": {"e": {"f": {"g": 3}}}}, "d": "vaz"}]},
            ]
        },
    ),
    # "Missing array after a": valid syntax here, but `a` is a list and `b1` no index of
    # it, so nothing is there to move and the document is unchanged
    ("a.b1.c", "c", NOTATION_INPUT),
]

REFUSED_MOVES: list[tuple[str, str, str]] = [
    # the rows KrakenD marks incorrect that `gateway check` refuses, with its reason
    ("a.*.b1.*.c", "a.*.c", "both sides need as many `*`s"),  # missing level
    ("a.*.b1.c", "c", "both sides need as many `*`s"),  # b1 has an array around c
    ("a.*.b1.c", "a.*.b1.*.d.*.e", "both sides need as many `*`s"),
    ("a.*.b1.*.c", "a.*.x.*.c", "both must start with 'a.*.b1.*'"),  # x not in last position
    ("a.*.b1.*.c", "a.*.x.*.c.d.e.f.g", "both must start with 'a.*.b1.*'"),
    ("a.*.b1.*.c", "a.*.b1.*.d.*.e", "both sides need as many `*`s"),  # more wildcards
]

SCHOOLS_INPUT: dict[str, Any] = {
    # made up (KrakenD gives none): 41 kindergartens and 3 schools, so that after the
    # append `schools.42` is the second school, the one with students
    "kindergarten": [{"name": f"Kinder {n}"} for n in range(41)],
    "schools": [
        {"name": "First School", "students": []},
        {
            "name": "Second School",
            "students": [
                {"PK_ID": 7, "name": "Ann", "password": "x1"},
                {"PK_ID": 9, "name": "Bo", "password": "x2"},
            ],
        },
        {"name": "Third School"},
    ],
}

EXAMPLES: dict[str, tuple[dict[str, Any], Any, dict[str, Any]]] = {
    # name: (input, our `shape:`, expected output)
    "shipping": (
        # "Example: Extract objects to another level" (also in data-manipulation.md):
        # move zone.state -> shipping_state, move zone.zip -> shipping_zip, del zone
        {
            "shipping_id": "f15f8c62-8c63-46de-a7f6-a08f131848c5",
            "zone": {"state": "NY", "zip": "10001"},
        },
        {"move": {"zone.state": "shipping_state", "zone.zip": "shipping_zip"}, "del": ["zone"]},
        {
            "shipping_id": "f15f8c62-8c63-46de-a7f6-a08f131848c5",
            "shipping_state": "NY",
            "shipping_zip": "10001",
        },
    ),
    "education": (
        # "Example: Moving around data in arrays": del kindergarten.0,
        # move schools.*.title -> schools.*.name, append kindergarten to schools
        {
            "kindergarten": [
                {"name": "TEST Kinder"},
                {"name": "Lil' Elephants"},
                {"name": "Bright Rainbows"},
            ],
            "schools": [{"title": "Brookside Elementary"}, {"title": "Oak Tree School"}],
        },
        {
            "move": {"schools.*.title": "schools.*.name"},
            "del": ["kindergarten.0"],
            "append": {"schools": ["kindergarten", "schools"]},
        },
        {
            "schools": [
                {"name": "Lil' Elephants"},
                {"name": "Bright Rainbows"},
                {"name": "Brookside Elementary"},
                {"name": "Oak Tree School"},
            ]
        },
    ),
    "alumni": (
        # v1.x/v2.0 "Configuration example": append kindergarten to schools, move
        # schools.42.students -> alumni, del schools, del alumni.*.password,
        # move alumni.*.PK_ID -> alumni.*.id; KrakenD runs them in this order, so the
        # append is a step of its own (a list of two mappings)
        SCHOOLS_INPUT,
        [
            {"append": {"schools": ["kindergarten", "schools"]}},
            {
                "move": {"schools.42.students": "alumni", "alumni.*.PK_ID": "alumni.*.id"},
                "del": ["schools", "alumni.*.password"],
            },
        ],
        {"alumni": [{"name": "Ann", "id": 7}, {"name": "Bo", "id": 9}]},
    ),
}
