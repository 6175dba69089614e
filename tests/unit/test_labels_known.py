"""NEU-DET by name: the P1 split lands with the images, in the same transaction."""

from __future__ import annotations

from pathlib import Path

from quickstudy.labels import Store
from quickstudy.labels.known import import_neu_det

from .labels_fixtures import write_image


def fake_neu_det(root: Path) -> Path:
    """NEU-DET's layout (ANNOTATIONS/*.xml, IMAGES/*.jpg) with crazing_1..5 and scratches_1..5."""
    (root / "ANNOTATIONS").mkdir(parents=True)
    for cls in ("crazing", "scratches"):
        for n in range(1, 6):
            name = f"{cls}_{n}"
            write_image(root / "IMAGES" / f"{name}.jpg", (40, 30), seed=n + len(cls))
            (root / "ANNOTATIONS" / f"{name}.xml").write_text(
                f"<annotation><filename>{name}.jpg</filename><size><width>40</width><height>30</height>"
                f"</size><object><name>{cls}</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax>"
                "<ymax>25</ymax></bndbox></object></annotation>"
            )
    return root


def test_neu_det_import_and_its_split_are_one_transaction(tmp_path: Path) -> None:
    root = fake_neu_det(tmp_path / "neu-det")
    store = Store.open(tmp_path / "neu.qs")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    report = import_neu_det(store, root)
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"]
    assert report.images == 10
    splits = {image.path.stem: image.split for image in store.images()}
    assert splits == {
        f"{c}_{n}": "test" if n == 5 else "train" for c in ("crazing", "scratches") for n in range(1, 6)
    }
