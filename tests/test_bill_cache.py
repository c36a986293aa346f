from meterd.bill_cache import BillCache
from meterd.readings import Outcome, Reading


def reading(ts: int, customer: str = "c", meter: int = 1) -> Reading:
    return Reading(customer, meter, ts, 0, None)


def test_a_reading_inside_a_span_evicts_and_one_outside_does_not():
    cache = BillCache()
    cache.put("c", 2026, 10, {"total": "1.00"}, {1: [(100, 200)]}, cache.begin())
    cache.readings_stored([reading(300), reading(200), reading(100)], [Outcome.STORED] * 3)
    assert cache.get("c", 2026, 10) == {"total": "1.00"}  # span bounds are the readings already used
    cache.readings_stored([reading(150, meter=2)], [Outcome.STORED])
    assert cache.get("c", 2026, 10) is not None  # another meter's reading
    cache.readings_stored([reading(150)], [Outcome.DUPLICATE])
    assert cache.get("c", 2026, 10) is not None  # nothing new was stored
    cache.readings_stored([reading(150)], [Outcome.STORED])
    assert cache.get("c", 2026, 10) is None


def test_unbounded_span_means_any_new_reading_of_that_meter_matters():
    cache = BillCache()
    cache.put("c", 2026, 10, {}, {1: [(100, None)]}, cache.begin())
    cache.readings_stored([reading(10**13)], [Outcome.STORED])
    assert cache.get("c", 2026, 10) is None


def test_a_bill_computed_across_a_flush_is_not_cached():
    cache = BillCache()
    begun = cache.begin()
    cache.readings_stored([reading(5, customer="other")], [Outcome.STORED])
    cache.put("c", 2026, 10, {}, {1: []}, begun)
    assert cache.get("c", 2026, 10) is None


def test_forget_customer_and_lru_bound():
    cache = BillCache(max_entries=2)
    for month in (8, 9, 10):
        cache.put("c", 2026, month, {"m": month}, {}, cache.begin())
    assert cache.get("c", 2026, 8) is None and len(cache) == 2
    cache.forget_customer("c")
    assert cache.get("c", 2026, 10) is None and len(cache) == 0
