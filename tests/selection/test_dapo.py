from workers.selection import dapo


def test_post_filter_drops_zero_variance_and_surplus_in_arrival_order():
    verdicts = dapo.post_filter([False, True, False, False, True, False], room=2)
    assert verdicts.tolist() == [dapo.KEEP, dapo.ZERO_VARIANCE, dapo.KEEP,
                                 dapo.SURPLUS, dapo.ZERO_VARIANCE, dapo.SURPLUS]


def test_a_full_batch_keeps_nothing_more():
    assert dapo.post_filter([False, False], room=0).tolist() == [dapo.SURPLUS, dapo.SURPLUS]
    assert dapo.post_filter([], room=3).tolist() == []
