from services.eventlog.partitions import (
    fnv1a64,
    owned_partitions,
    partition_of,
    user_subject,
    user_token,
)


def test_fnv1a64_known_values() -> None:
    # Published FNV-1a 64 test vectors: the partition of a shopper never depends on the process.
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


def test_partition_and_subject_are_stable_and_safe() -> None:
    assert partition_of("shopper-1", 16) == partition_of("shopper-1", 16)
    subject = user_subject("a.b *>", 16)
    prefix, partition, token = subject.rsplit(".", 2)
    assert prefix == "vitrine.events" and int(partition) == partition_of("a.b *>", 16)
    assert token == user_token("a.b *>") and token.isalnum()  # no id characters in the subject


def test_owned_partitions_cover_each_partition_once() -> None:
    owned = [p for shard in range(3) for p in owned_partitions(shard, 3, 16)]
    assert sorted(owned) == list(range(16))
