"""The assembler on its own: planning, unit states, retries, overlaps, spills, crashes.

The stateful test drives an :class:`Assembler` directly with what a writer's life can
bring (tiles in any order, the same tile again, a store that fails, parts spilled as
fragments, a crash that loses everything in memory and a new run that finds what the
log and the fragments hold) against a simple model: the true image. Whatever happens,
every unit stored holds the true pixels, and sending every tile again completes the image.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ngff_writer._declare.grid import JOIN_BELOW
from ngff_writer._write.assemble import Assembler, BlendRule, CropRule, Part, Piece, State, merge_pieces, plan
from ngff_writer.errors import BufferFullError, OverlapError
from ngff_writer.tiling import tiles


def piece(box, unit=4):
    start, stop = box
    region = tuple(slice(a * unit, b * unit) for a, b in zip(start, stop, strict=True))
    data = np.full([r.stop - r.start for r in region], float(sum(start)))
    return Piece(region, data, box)


# ---- planning and merging ------------------------------------------------------------------
def test_plan_splits_a_region_into_inner_units_and_edges():
    p = plan((slice(3, 17), slice(0, 10)), shape=(20, 10), unit=(4, 4), whole_units=True)
    assert p.inner == ((1, 0), (4, 3))  # rows 4-16 whole; the array's end closes the last column
    assert sorted(idx for idx, _, _ in p.edges) == [(0, 0), (0, 1), (0, 2), (4, 0), (4, 1), (4, 2)]
    local = {idx: loc for idx, loc, _ in p.edges}
    assert local[(0, 0)] == (slice(3, 4), slice(0, 4)) and local[(4, 2)] == (slice(0, 1), slice(0, 2))
    blend = plan((slice(3, 17), slice(0, 10)), shape=(20, 10), unit=(4, 4), whole_units=False)
    assert blend.inner is None and len(blend.edges) == 15


def test_neighbours_merge_into_boxes():
    parts = [piece(((0, 1), (1, 2))), piece(((1, 1), (2, 2))), piece(((0, 0), (1, 1)))]
    merged = merge_pieces(parts)
    assert len(merged) == 2
    covered = np.zeros((2, 2), int)
    for m in merged:
        covered[tuple(slice(a, b) for a, b in zip(*m.box, strict=True))] += 1
        for p in parts:  # each piece's data sits where its box says
            (a0, a1), (b0, b1) = p.box, m.box
            if all(x >= y for x, y in zip(a0, b0, strict=True)) and all(
                    x <= y for x, y in zip(a1, b1, strict=True)):
                offset = tuple(slice(r.start - q.start, r.stop - q.start)
                               for r, q in zip(p.region, m.region, strict=True))
                np.testing.assert_array_equal(m.data[offset], p.data)
    np.testing.assert_array_equal(covered, [[1, 1], [0, 1]])  # each unit once, none made up


def test_non_neighbours_stay_apart():
    parts = [piece(((0, 0), (1, 1))), piece(((1, 1), (2, 2))), piece(((0, 2), (1, 3)))]
    assert len(merge_pieces(parts)) == 3


def test_large_neighbours_stay_apart_without_a_copy():
    # Joining copies; a block of JOIN_BELOW bytes or more goes to the store on its own.
    unit = JOIN_BELOW // 4
    big = [Piece((slice(k * unit, (k + 1) * unit),), np.full(unit, k, np.float32), ((k,), (k + 1,)))
           for k in range(3)]
    merged = merge_pieces(big)
    assert sorted(m.box for m in merged) == [p.box for p in big]
    assert all(any(m.data is p.data for p in big) for m in merged)
    small = [Piece((slice(k * 4, k * 4 + 4),), np.full(4, k, np.float32), ((k,), (k + 1,)))
             for k in range(3)]
    assert [m.box for m in merge_pieces(small)] == [((0,), (3,))]


# ---- states ---------------------------------------------------------------------------------
def crop(shape=(8, 8), unit=(4, 4), max_bytes=1 << 20, policy="spill"):
    return Assembler(shape, unit, CropRule(np.dtype("float32"), 0), max_bytes, policy)


def test_parts_complete_a_unit_once_and_retries_are_not_taken_twice():
    a = crop()
    image = np.arange(64, dtype=np.float32).reshape(8, 8)
    left, right = (slice(0, 4), slice(0, 2)), (slice(0, 4), slice(2, 4))
    assert a.add(left, image[left]) == ([], [])
    assert a.state[0, 0] == State.HELD and a.buffered_bytes == 64
    assert a.add(left, image[left]) == ([], [])  # a retry changes nothing
    (ready,), spill = a.add(right, image[right])
    assert spill == [] and ready.box == ((0, 0), (1, 1))
    np.testing.assert_array_equal(ready.data, image[:4, :4])
    assert a.state[0, 0] == State.STORED and a.buffered_bytes == 0
    assert a.add(right, image[right]) == ([], [])  # a retry of a stored unit's part


def test_overlapping_regions_of_one_run_are_refused_before_anything_changes():
    a = crop()
    a.add((slice(0, 4), slice(0, 2)), np.zeros((4, 2), np.float32))
    before = (a.state.copy(), a.buffered_bytes, a.pending_units)
    with pytest.raises(OverlapError, match="inside unit"):
        a.add((slice(0, 4), slice(1, 3)), np.zeros((4, 2), np.float32))
    a.add((slice(4, 8), slice(0, 8)), np.zeros((4, 8), np.float32))  # whole units: STORED
    with pytest.raises(OverlapError, match="stored from another region"):
        a.add((slice(6, 8), slice(0, 2)), np.zeros((2, 2), np.float32))
    with pytest.raises(OverlapError):
        a.add((slice(2, 8), slice(4, 8)), np.zeros((6, 4), np.float32))
    assert (a.state[:1] == before[0][:1]).all() and a.buffered_bytes == before[1]


def test_units_stored_elsewhere_take_any_region_as_a_retry():
    a = crop()
    found = np.zeros((2, 2), bool)
    found[0, 0] = True
    a.mark_stored(found)
    assert a.state[0, 0] == State.FOUND and not a.all_stored
    # A region of another tiling over the found unit: its part there is skipped.
    ready, _ = a.add((slice(0, 8), slice(2, 8)), np.ones((8, 6), np.float32))
    assert a.state[0, 0] == State.FOUND and a.held((0, 0)) == {}
    assert [p.box for p in ready] == [((0, 1), (2, 2))] and a.pending_units == [(1, 0)]


def test_a_failed_store_makes_its_units_pending_again():
    a = crop()
    (ready,), _ = a.add((slice(0, 4), slice(0, 4)), np.ones((4, 4), np.float32))
    a.forget(ready.box)
    assert a.state[0, 0] == State.EMPTY
    (again,), _ = a.add((slice(0, 4), slice(0, 4)), np.ones((4, 4), np.float32))  # the retry
    assert again.box == ready.box and a.state[0, 0] == State.STORED


def test_spill_policy_hands_back_the_oldest_and_error_policy_refuses():
    a = crop(max_bytes=100)
    a.add((slice(0, 4), slice(0, 1)), np.ones((4, 1), np.float32))
    _, spill = a.add((slice(0, 4), slice(4, 5)), np.ones((4, 1), np.float32))
    assert spill == [(0, 0)]  # 2 x 64 bytes > 100: the oldest unit goes to fragments
    parts = a.held((0, 0))
    a.release((0, 0))
    assert a.state[0, 0] == State.SPILLED and a.buffered_bytes == 64
    # The rest of the unit arrives: with the spilled part it is complete, so it is handed
    # back to be completed from the fragments.
    _, spill = a.add((slice(0, 4), slice(1, 4)), np.ones((4, 3), np.float32))
    assert spill[0] == (0, 0)
    piece_ = a.complete_with((0, 0), parts)  # the fragments: what was saved
    assert piece_ is not None and a.state[0, 0] == State.STORED  # every part was this run's

    strict = crop(max_bytes=64, policy="error")
    strict.add((slice(0, 4), slice(0, 1)), np.ones((4, 1), np.float32))
    with pytest.raises(BufferFullError):
        strict.add((slice(4, 8), slice(0, 1)), np.ones((4, 1), np.float32))
    assert strict.pending_units == [(0, 0)]


def test_fragments_of_another_tiling_are_reported():
    a = crop()
    parts = {(0, 4, 0, 2): Part((0, 4, 0, 2), (slice(0, 4), slice(0, 2)), np.ones((4, 2), np.float32)),
             (0, 4, 1, 4): Part((0, 4, 1, 4), (slice(0, 4), slice(1, 4)), np.ones((4, 3), np.float32))}
    with pytest.raises(OverlapError, match="another tiling"):
        a.complete_with((0, 0), parts)


def test_blend_units_wait_for_every_tile_touching_them():
    shape = (1, 10)
    rule = BlendRule(shape, (1,), (6,), (2,), "linear", np.dtype("float32"))
    a = Assembler(shape, (1, 5), rule, 1 << 20)
    ready, _ = a.add((slice(0, 1), slice(0, 6)), np.ones((1, 6), np.float32), part_id=(0,))
    assert [p.box for p in ready] == []  # unit 0 (0-5) is touched by both tiles
    ready, _ = a.add((slice(0, 1), slice(4, 10)), np.full((1, 6), 3, np.float32), part_id=(4,))
    assert sorted(p.box for p in ready) == [((0, 0), (1, 2))]  # both units, merged into one box
    assert a.all_stored


# ---- every life a writer can have, against the true image ---------------------------------------
class WriterLife(RuleBasedStateMachine):
    """One image, its tiles, one writer at a time; fragments and the store outlive crashes."""

    @initialize(data=st.data())
    def setup(self, data):
        draw = data.draw
        self.shape = (draw(st.integers(4, 40), label="h"), draw(st.integers(4, 40), label="w"))
        self.unit = (draw(st.integers(2, 12), label="uh"), draw(st.integers(2, 12), label="uw"))
        tile = (draw(st.integers(3, 16), label="th"), draw(st.integers(3, 16), label="tw"))
        overlap = tuple(draw(st.integers(0, t - 1), label="o") for t in tile)
        self.tiles = list(tiles(self.shape, tile, overlap))
        self.truth = np.random.default_rng(draw(st.integers(0, 999), label="seed")).random(
            self.shape, dtype=np.float32)
        self.max_bytes = draw(st.sampled_from([0, 64, 1 << 20]), label="max_bytes")
        self.grid = tuple(-(-n // u) for n, u in zip(self.shape, self.unit, strict=True))
        self.stored = np.zeros(self.grid, bool)
        self.image = np.zeros(self.shape, np.float32)  # what the store holds
        self.fragments: dict[tuple[int, ...], dict] = {}
        self.fail_next = False
        self.new_run()

    def new_run(self):
        self.assembler = Assembler(self.shape, self.unit, CropRule(np.dtype("float32"), 0),
                                   self.max_bytes, "spill")
        self.assembler.mark_stored(self.stored)  # what the log lists
        self.inflight: list[Piece] = []

    def store(self, pieces):
        for p in pieces:
            if self.fail_next:
                self.fail_next = False
                self.assembler.forget(p.box)  # the engine's report of a failed store
                continue
            self.image[p.region] = p.data
            self.stored[tuple(slice(a, b) for a, b in zip(*p.box, strict=True))] = True

    def spill(self, units):
        for idx in units:
            parts = self.assembler.held(idx)
            if parts:
                self.fragments.setdefault(idx, {}).update(parts)
                self.assembler.release(idx)
            piece_ = self.assembler.complete_with(idx, dict(self.fragments.get(idx, {})))
            if piece_ is not None:
                self.store([piece_])
                if self.stored[idx]:
                    self.fragments.pop(idx, None)

    def send(self, t):
        region = tuple(slice(a, a + n) for a, n in zip(t.stitch_start, t.crop_size, strict=True))
        ready, to_spill = self.assembler.add(region, self.truth[region].copy())
        self.store(ready)
        self.spill(to_spill)

    @rule(k=st.integers(0, 10_000))
    def send_a_tile(self, k):
        self.send(self.tiles[k % len(self.tiles)])

    @rule()
    def a_store_fails(self):
        self.fail_next = True

    @rule()
    def flush(self):
        units = set(self.fragments) | set(self.assembler.pending_units)
        self.spill(sorted(units))

    @rule()
    def crash(self):
        self.new_run()  # parts in memory are lost; the store and the fragments remain

    @invariant()
    def stored_units_hold_the_truth(self):
        if not hasattr(self, "stored"):
            return
        mask = np.kron(self.stored, np.ones(self.unit, bool))[: self.shape[0], : self.shape[1]]
        np.testing.assert_array_equal(self.image[mask], self.truth[mask])
        assert self.assembler.buffered_bytes <= max(self.max_bytes, 4 * np.prod(self.unit))

    @precondition(lambda self: hasattr(self, "stored"))
    @rule(seed=st.integers(0, 999))
    def every_tile_again_completes_the_image(self, seed):
        self.fail_next = False
        for k in np.random.default_rng(seed).permutation(len(self.tiles)):
            self.send(self.tiles[k])
        self.flush()
        assert self.stored.all()
        np.testing.assert_array_equal(self.image, self.truth)
        assert self.assembler.all_stored or self.fragments == {}


WriterLife.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_writer_life = WriterLife.TestCase
