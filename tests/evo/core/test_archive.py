"""The paper's insertion rule and the archive's bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fooling.encodings import DirectGenomes
from fooling.evo.archive import AddStatus, BatchBest, ClassArchive, candidate_rows


def genomes(values: list[float]) -> DirectGenomes:
    """One 1x2x2 genome per value, every pixel equal to it, so rows are recognisable."""
    return DirectGenomes(np.repeat(np.array(values, np.float32), 4).reshape(-1, 1, 2, 2))


def add(archive, values, probabilities, generation=0, first_id=0):
    ids = np.arange(first_id, first_id + len(values))
    return archive.add_batch(
        genomes(values), np.array(probabilities, np.float32), individual_id=ids, generation=generation
    )


def test_child_takes_every_cell_it_beats_not_only_its_argmax():
    archive = ClassArchive(["a", "b", "c"])
    add(archive, [0.1], [[0.5, 0.3, 0.2]])
    assert archive.occupied.all()  # a random first child fills all three cells
    status = add(archive, [0.9], [[0.4, 0.35, 0.25]], generation=1, first_id=1)
    # Its argmax (a) loses to the occupant, but it beats b and c: it takes both.
    assert status.tolist() == [AddStatus.IMPROVED]
    assert archive.individual_id.tolist() == [0, 1, 1]
    assert archive.fitness.tolist() == pytest.approx([0.5, 0.35, 0.25])
    assert archive.birth_generation.tolist() == [0, 1, 1]
    assert archive.genomes.pixels[1, 0, 0, 0] == np.float32(0.9)
    assert archive.genomes.pixels[0, 0, 0, 0] == np.float32(0.1)


def test_equal_probability_does_not_replace_and_first_of_ties_wins():
    archive = ClassArchive(["a", "b"])
    add(archive, [0.1], [[0.6, 0.4]])
    status = add(archive, [0.2, 0.3, 0.4], [[0.6, 0.1], [0.1, 0.7], [0.2, 0.7]], first_id=1)
    assert status.tolist() == [AddStatus.NOT_ADDED, AddStatus.IMPROVED, AddStatus.NOT_ADDED]
    assert archive.individual_id.tolist() == [0, 2]


def test_batch_insertion_equals_one_by_one():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(5), size=40).astype(np.float32)
    values = rng.random(40).tolist()
    batched, sequential = ClassArchive(list("abcde")), ClassArchive(list("abcde"))
    add(batched, values, probabilities)
    for i, value in enumerate(values):
        add(sequential, [value], probabilities[i : i + 1], first_id=i)
    assert batched.equals(sequential)


def test_status_new_for_empty_cells_and_stats():
    archive = ClassArchive(["a", "b", "c", "d"])
    status = add(archive, [0.1, 0.2], [[0.9, 0.1, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0]])
    assert status.tolist() == [AddStatus.NEW, AddStatus.NEW]
    stats = archive.stats()
    assert stats["coverage"] == 1.0  # d is taken with probability 0 > -inf
    assert stats["max"] == pytest.approx(0.9)
    assert stats["qd_score"] == pytest.approx(0.9 + 0.5 + 0.5 + 0.0)
    assert len(archive.data()) == 4


def test_parents_are_uniform_over_occupied_cells():
    archive = ClassArchive(list("abcdef"))
    add(archive, [0.1, 0.2], [[1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]])
    archive.occupied[[1, 2, 4, 5]] = False  # pretend only a and d were filled
    cells = archive.sample_parents(10_000, np.random.default_rng(0))
    assert set(np.unique(cells)) == {0, 3}
    assert abs((cells == 0).mean() - 0.5) < 0.03


def test_bad_probabilities_are_refused():
    archive = ClassArchive(["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        add(archive, [0.1], [[0.5, 0.3, 0.2]])
    with pytest.raises(ValueError, match="finite"):
        add(archive, [0.1], [[np.nan, 0.3]])
    with pytest.raises(ValueError, match="empty"):
        ClassArchive(["a"]).sample_parents(1, np.random.default_rng(0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("levels", [0, 8], ids=["continuous", "ties"])
def test_candidate_rows_of_a_generation_give_the_archive_of_whole_batches(dtype, levels):
    # Candidates are chosen against the fitness before the generation's first batch; later
    # batches then insert into an archive that already improved. Inserting only the
    # candidate rows must give the archive that inserting whole batches gives, with ties
    # (probabilities on a coarse grid) and with float64 scores compared at float32.
    rng = np.random.default_rng(5)

    def scores(size: int) -> np.ndarray:
        values = rng.dirichlet(np.full(6, 0.3), size=size)
        return (np.round(values * levels) / levels if levels else values).astype(dtype)

    whole, some, reduced = (ClassArchive(list("abcdef")) for _ in range(3))
    first = scores(8)
    add(whole, rng.random(8).tolist(), first)
    add(some, [0.0] * 8, first)
    some.genomes = whole.genomes.copy()
    add(reduced, [0.0] * 8, first)
    reduced.genomes = whole.genomes.copy()
    sent = 0
    for generation in range(1, 6):
        start = whole.fitness.copy()
        for batch in range(3):
            probabilities = scores(10)
            values = rng.random(10).tolist()
            ids = np.arange(10) + 100 * generation + 10 * batch
            rows = candidate_rows(probabilities, start)
            sent += len(rows)
            assert set(rows) <= set(probabilities.argmax(axis=0))
            whole.add_batch(genomes(values), probabilities, individual_id=ids, generation=generation)
            kept = genomes([values[r] for r in rows])
            some.add_batch(kept, probabilities, individual_id=ids, generation=generation, rows=rows)
            # What a device scorer sends: each cell's best row, and the candidates chosen from it.
            best = BatchBest.of(probabilities)
            assert np.array_equal(candidate_rows(best, start), rows)
            reduced.add_batch(kept, best, individual_id=ids, generation=generation, rows=rows)
    assert some.equals(whole) and reduced.equals(whole)
    assert sent <= 5 * 3 * 6  # at most one row per cell and batch


def test_a_winning_row_that_was_not_sent_is_a_bug_not_a_silent_loss():
    archive = ClassArchive(["a", "b"])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    with pytest.raises(RuntimeError, match=r"rows \[1\] win a cell but were not sent"):
        archive.add_batch(genomes([0.1]), probabilities, individual_id=np.arange(2), generation=0,
                          rows=np.array([0]))  # fmt: skip
    assert not archive.occupied.any()  # nothing inserted before the check
    with pytest.raises(ValueError, match="1 genomes for 2 rows"):
        archive.add_batch(genomes([0.1]), probabilities, individual_id=np.arange(2), generation=0,
                          rows=np.array([0, 1]))  # fmt: skip


def test_each_cells_best_row_is_what_insertion_reads_of_a_batch():
    probabilities = np.array([[0.2, 0.5, -np.inf], [0.7, 0.5, -np.inf], [0.7, 0.1, -np.inf]], np.float32)
    best = BatchBest.of(probabilities)
    assert best.size == 3 and best.row.tolist() == [1, 0, 0]  # the first row on ties
    assert best.probability.dtype == np.float32
    np.testing.assert_array_equal(best.probability, np.array([0.7, 0.5, -np.inf], np.float32))
    whole, reduced = ClassArchive(list("abc")), ClassArchive(list("abc"))
    status = whole.add_batch(
        genomes([0.1, 0.2, 0.3]), probabilities, individual_id=np.arange(3), generation=0
    )
    assert np.array_equal(
        reduced.add_batch(genomes([0.1, 0.2, 0.3]), best, individual_id=np.arange(3), generation=0), status
    )
    assert reduced.equals(whole) and not whole.occupied[2]  # a class no row scored stays empty
    empty = BatchBest.of(np.zeros((0, 3), np.float32))
    assert empty.size == 0 and (empty.probability == -np.inf).all()
    # Reduced as tensors (a scorer's device), the same rows and values, ties and -inf included.
    for scores in (probabilities, probabilities.astype(np.float64) + [[0, 0, 0], [0, 1e-12, 0], [0, 0, 0]]):
        on_device = BatchBest.of_tensor(torch.from_numpy(scores))
        on_host = BatchBest.of(scores)
        assert on_device.size == on_host.size and on_device.probability.dtype == np.float32
        np.testing.assert_array_equal(on_device.row, on_host.row)
        np.testing.assert_array_equal(on_device.probability, on_host.probability)
    assert on_device.row[1] == 1  # float64 scores compared as such, before the cast to float32
    assert BatchBest.of_tensor(torch.zeros(0, 3)).size == 0
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        reduced.add_batch(genomes([0.1, 0.2]), best, individual_id=np.arange(2), generation=1)
    with pytest.raises(ValueError, match=r"expected \(3, 2\)"):
        ClassArchive(list("ab")).add_batch(
            genomes([0.1, 0.2, 0.3]), best, individual_id=np.arange(3), generation=1
        )
    nan = BatchBest(3, best.row, np.array([np.nan, 0.5, 0.1], np.float32))
    with pytest.raises(ValueError, match="finite"):
        reduced.add_batch(genomes([0.1, 0.2, 0.3]), nan, individual_id=np.arange(3), generation=1)
