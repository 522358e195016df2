"""Tests for ray_jobs.steps.clean.quality: one realistic text per drop reason, a clean real
passage that passes every rule, language gating, config validation and null handling."""

import base64
import zlib
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from ray_jobs.steps.clean.quality import DEFAULT_OFF, REASONS, QualityConfig, drop_reasons

# Charles Dickens, "A Tale of Two Cities" (1859), Book 1 ch. 1, opening four paragraphs, as in
# Project Gutenberg (public domain; ../shared/data/gutenberg_subset_rcdm_uga).
TALE = """\
It was the best of times,
it was the worst of times,
it was the age of wisdom,
it was the age of foolishness,
it was the epoch of belief,
it was the epoch of incredulity,
it was the season of Light,
it was the season of Darkness,
it was the spring of hope,
it was the winter of despair,
we had everything before us,
we had nothing before us,
we were all going direct to Heaven,
we were all going direct the other way--
in short, the period was so far like the present period, that some of
its noisiest authorities insisted on its being received, for good or for
evil, in the superlative degree of comparison only.

There were a king with a large jaw and a queen with a plain face, on the
throne of England; there were a king with a large jaw and a queen with
a fair face, on the throne of France. In both countries it was clearer
than crystal to the lords of the State preserves of loaves and fishes,
that things in general were settled for ever.

It was the year of Our Lord one thousand seven hundred and seventy-five.
Spiritual revelations were conceded to England at that favoured period,
as at this. Mrs. Southcott had recently attained her five-and-twentieth
blessed birthday, of whom a prophetic private in the Life Guards had
heralded the sublime appearance by announcing that arrangements were
made for the swallowing up of London and Westminster. Even the Cock-lane
ghost had been laid only a round dozen of years, after rapping out its
messages, as the spirits of this very year last past (supernaturally
deficient in originality) rapped out theirs. Mere messages in the
earthly order of events had lately come to the English Crown and People,
from a congress of British subjects in America: which, strange
to relate, have proved more important to the human race than any
communications yet received through any of the chickens of the Cock-lane
brood.

France, less favoured on the whole as to matters spiritual than her
sister of the shield and trident, rolled with exceeding smoothness down
hill, making paper money and spending it. Under the guidance of her
Christian pastors, she entertained herself, besides, with such humane
achievements as sentencing a youth to have his hands cut off, his tongue
torn out with pincers, and his body burned alive, because he had not
kneeled down in the rain to do honour to a dirty procession of monks
which passed within his view, at a distance of some fifty or sixty
yards. It is likely enough that, rooted in the woods of France and
Norway, there were growing trees, when that sufferer was put to death,
already marked by the Woodman, Fate, to come down and be sawn into
boards, to make a certain movable framework with a sack and a knife in
it, terrible in history. It is likely enough that in the rough outhouses
of some tillers of the heavy lands adjacent to Paris, there were
sheltered from the weather that very day, rude carts, bespattered with
rustic mire, snuffed about by pigs, and roosted in by poultry, which
the Farmer, Death, had already set apart to be his tumbrils of
the Revolution. But that Woodman and that Farmer, though they work
unceasingly, work silently, and no one heard them as they went about
with muffled tread: the rather, forasmuch as to entertain any suspicion
that they were awake, was to be atheistical and traitorous."""

RUSSIAN = """\
Добрый день, коллеги. Пересылаю вам отчёт о работе нашего отдела за прошедший квартал.
В целом результаты хорошие: мы закончили перенос данных на новый сервер, обновили
документацию и провели обучение для новых сотрудников. Осталось несколько открытых
вопросов по бюджету на следующий год, их мы обсудим на встрече в четверг. Если у вас
есть замечания к отчёту, пожалуйста, пришлите их до среды, чтобы я успел внести правки.
Спасибо всем за помощь и терпение в эти непростые недели."""

# One realistic text per reason; each fails that rule and no other (see test_each_reason).
# "empty" and "too_long" have their own tests below.
FAILING = {
    "too_short": """\
Thanks for the notes. I will bring the slides to the meeting on Friday,
and we can go through the budget then.

--
Anna""",
    "char_repetition": """\
$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$$
**********************  WORK FROM HOME  ***********************
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Dear friend, you can earn five thousand dollars a week from the comfort of your own home
with our proven system. No experience is needed and the work takes only one hour a day.
Reply to this message today and we will send you the full starter kit, with the manual
and the list of our partners, at no cost to you.
++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
========================================================================""",
    "avg_word_length": """\
Hi Tom,

Here is the scanned contract that you asked for. The signed copy is attached below;
please check the second page and let me know if anything is missing before Monday.

Thanks,
Maria

"""
    + base64.encodebytes(zlib.compress(TALE.encode())).decode(),
    "non_ascii_ratio": "Forwarding the quarterly report from the Moscow office; the summary is below "
    "and the full version is with the other files.\n\n" + RUSSIAN,
    "symbol_ratio": """\
Sunset over the harbour after a long day of walking around the old town with friends.
We finished with fresh fish and a glass of wine at the little place near the lighthouse,
and the light was unbelievable. Already planning to come back next summer.

#travel #sunset #harbour #oldtown #photography #nofilter #summer #wanderlust
#instatravel #travelgram #seaside #goldenhour #vacation #friends""",
    "bullet_lines": """\
• Home
• About the company
• Our history and mission
• Products and services
• Office furniture for small teams
• Chairs, desks and storage units
• Delivery to your door
• Returns and refunds
• Frequently asked questions
• Careers with the team
• Contact the sales office
• Terms of use
• Privacy and cookie policy
• Accessibility statement
• Sitemap""",
    "ellipsis_lines": """\
Latest from the newsroom

City council approves the new budget for road repairs after a long debate on Tuesday night ...
Local bakery wins a national award for the best sourdough bread in the country this year ...
Heavy rain expected over the weekend as forecasters warn of flooding near the river banks ...
The museum reopens its doors to visitors after two years of restoration work on the old building
Schools prepare for the new term with extra teachers and smaller class sizes in the district
Volunteers clean up the beach and collect more than two hundred bags of rubbish on Sunday""",
    "duplicate_lines": """\
Re: Best way to store winter tyres?
Posted by mike_r on 12 March
I keep mine stacked flat in the garage on a wooden pallet, away from the boiler.
Reply | Quote | Report
Back to top
Posted by sarah.k on 12 March
Mine hang on wall hooks. Clean them first and let them dry, otherwise the rims corrode.
Reply | Quote | Report
Back to top
Posted by dave1978 on 13 March
The tyre shop stores them for a small fee each season, which saves a lot of space.
Reply | Quote | Report
Back to top
Posted by mike_r on 13 March
Good point about the rims. I also put covers over them to keep the dust off.
Reply | Quote | Report
Back to top""",
    "duplicate_paragraphs": """\
The town library reopened on Saturday after eighteen months of repairs to its roof
and heating, and more than four hundred visitors came through the doors in the
first hour alone.

Advertisement

The building, which dates from 1904, had been closed since a storm damaged the slate
roof and let water into the reading room. Most of the books were moved to a
warehouse on the edge of town while the work was carried out.

Advertisement

Staff said the new heating system should cut the energy bill by almost half, and
that the extra space in the basement will be used for a children's corner with
regular story hours during the school holidays.

Advertisement

Local historians welcomed the careful restoration of the original oak shelving,
which had been at risk of rot, and the return of the painted ceiling above the
main staircase.

Advertisement

The library is open from Tuesday to Saturday, with late opening on Thursday
evenings until eight o'clock.

Advertisement""",
    "top_ngram_repetition": """\
Cheap flights to Paris, cheap flights to Rome, cheap flights to London, cheap flights to
Madrid, cheap flights to Berlin, cheap flights to Vienna, cheap flights to Prague, cheap
flights to Lisbon, cheap flights to Athens and cheap flights to Dublin. Book the best
cheap flights with our travel partners today and save on every trip you take this year,
with no booking fees at all.""",
    "no_stop_words": """\
Oak dining table, model OT-180
Dimensions: 180 x 90 cm, height 76 cm
Weight: 42 kg
Material: solid European oak, oiled finish
Legs: powder-coated steel, matt black
Seats: six adults, eight at a push
Assembly: required, tools included
Delivery: free within mainland UK, 5-7 working days
Care: wipe clean using a damp cloth; avoid harsh detergents
Warranty: two years on frame, one year on finish
Colours: natural, smoked, white-washed
Matching chairs available separately; bench version also in stock""",
    "lorem_ipsum": """\
Welcome to the website of the Riverside Garden Centre. We are open seven days a week and our staff
will be happy to help you choose the right plants for your garden.

Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore
et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.

Visit the shop to see the new range of pots and tools that arrived this spring.""",
    "alpha_words": """\
Timetable for bus route 7 from the station to the hospital, valid from 1 September to 30 June.
Weekdays: 06:15 06:45 07:05 07:25 07:45 08:05 08:25 08:45 09:15 09:45 10:15 10:45 11:15 11:45
Afternoon: 12:15 12:45 13:15 13:45 14:05 14:25 14:45 15:05 15:25 15:45 16:05 16:25 16:45 17:05
Evening: 17:35 18:05 18:35 19:05 19:35 20:05 20:35 21:05 21:35 22:05 22:35 23:05 23:35 23:55
Saturday: 07:10 07:50 08:30 09:10 09:50 10:30 11:10 11:50 12:30 13:10 13:50 14:30 15:10 15:50
Sunday and public holidays: 08:20 09:20 10:20 11:20 12:20 13:20 14:20 15:20 16:20 17:20 18:20""",
    "duplicate_line_chars": """\
The harbour authority has approved the plan to dredge the main channel this winter, after two
ships ran aground on the sand bar in October and a third had to wait a day for the high tide.
Sign up for our newsletter to get the latest local news.
Work will start in December and is expected to last about six weeks, during which the ferry to the
island will run from the north pier instead of the town quay, the authority said on Monday.
Fishermen welcomed the decision but asked for the work to be paused during the spawning season,
when the boats stay in port and the channel is quieter than at any other time of the year.
Sign up for our newsletter to get the latest local news.
The cost of the dredging, around two million pounds, will be shared with the county council.
Sign up for our newsletter to get the latest local news.""",
    "short_lines": """\
Lemon drizzle cake
Serves 8
Ingredients
225g butter
225g sugar
4 eggs
275g flour
2 lemons
85g icing sugar
Method
Heat the oven to 180C and line a loaf tin with baking paper before you start.
Beat the butter and the sugar together until pale, then add the eggs one at a time.
Fold in the flour and the zest of one lemon, spoon into the tin and bake for 50 minutes.
Mix the juice of both lemons with the icing sugar and pour it over the warm cake.""",
    "duplicate_ngrams": """\
Our family-run hotel sits on the edge of the old town, a short walk from the cathedral and the river.
Every room has a view of the hills and a private bathroom, and breakfast is served on the terrace
until eleven. Guests can borrow bicycles at the reception for free and explore the valley on their own.
Book directly with us and get the best price guaranteed, free cancellation up to two days before arrival
and a welcome drink at the bar on the first evening of your stay.
In the evening the restaurant offers local dishes made with vegetables from our own garden, and the
wine list has more than forty bottles from the region. Families with children are welcome.
Book directly with us, get the best price guaranteed, free cancellation up to two days before arrival
and a welcome drink at the bar on the first evening of your stay.""",
}


def reasons(texts, langs=None, cfg=None):
    langs = ["en"] * len(texts) if langs is None else langs
    return drop_reasons(
        pa.array(texts, pa.string()), pa.array(langs, pa.string()), cfg or QualityConfig()
    ).to_pylist()


# Rules that measure nearly the same thing as another (a menu is bulleted and short-lined; a repeated line is a
# repeated n-gram): a text made to fail one fails its twin too.
TWINS = {
    "bullet_lines": ("short_lines",),
    "duplicate_lines": ("duplicate_line_chars", "short_lines", "duplicate_ngrams"),
    "duplicate_line_chars": ("duplicate_ngrams",),
}


def without(reason):
    off = (reason, *TWINS.get(reason, ()))
    return QualityConfig(enabled=tuple(r for r in QualityConfig().enabled if r not in off))


def test_reason_names_and_order():
    assert REASONS == (
        "empty", "too_short", "too_long", "char_repetition", "lorem_ipsum", "curly_bracket", "avg_word_length",
        "alpha_words", "non_ascii_ratio", "symbol_ratio", "bullet_lines", "ellipsis_lines", "duplicate_lines",
        "duplicate_paragraphs", "duplicate_line_chars", "line_punctuation", "short_lines", "list_like",
        "too_few_sentences", "top_ngram_repetition", "duplicate_ngrams", "no_stop_words",
    )
    assert QualityConfig().enabled == tuple(r for r in REASONS if r not in DEFAULT_OFF)


def test_clean_gutenberg_passage_passes_every_rule():
    assert reasons([TALE]) == [None]


@pytest.mark.parametrize("reason", sorted(FAILING))
def test_each_reason(reason):
    text = FAILING[reason]
    assert reasons([text]) == [reason]
    assert reasons([text], cfg=without(reason)) == [None], "the text should fail only this rule"


# Off by default (C4's web-only rules, FineWeb's list ratio; the numbers are in QualityConfig's comments): one
# realistic text each that the default rules keep (a list: short_lines drops it) and the rule, turned on, drops.
OFF_BY_DEFAULT = {
    "curly_bracket": """\
Hi all,

the new build script fails on my machine when the cache folder is missing. A guard like this one fixes it:

if [ ! -d "$CACHE" ]; then mkdir -p "${CACHE}"; fi

Could somebody check it on the Mac before I merge it into the main branch? I would also like to know if the
same problem happens in the nightly job, because the logs from last night look very similar to mine.

Thanks,
Peter""",
    "line_punctuation": TALE,  # hard-wrapped prose: 5 of its 57 lines (0.09) end in terminal punctuation
    "list_like": FAILING["bullet_lines"].replace("• ", "") + "\nOpening hours\nStore finder\nGift cards\n"
    "Trade accounts\nNewsletter sign-up\nPress and media\nSustainability report\nModern slavery statement",
    "too_few_sentences": """\
Thanks for sending the draft of the grant application over so quickly, it reads well and I only have small
comments on the budget section, which I marked in the margin of the attached copy along with two questions
about the travel costs for the second year of the project and the equipment we listed under the consumables
heading""",
}


@pytest.mark.parametrize("reason", sorted(OFF_BY_DEFAULT))
def test_rules_off_by_default(reason):
    assert reason not in QualityConfig().enabled
    text = OFF_BY_DEFAULT[reason]
    assert reasons([text]) == ["short_lines" if reason == "list_like" else None]
    assert reasons([text], cfg=QualityConfig(enabled=(reason,))) == [reason]


def test_empty_covers_null_blank_and_whitespace():
    assert reasons([None, "", "  \n\t \n"]) == ["empty"] * 3


def test_too_long_default_threshold():
    # ~200 copies of the passage = 117,400 words, over Gopher's 100,000.
    text = "\n\n".join([TALE] * 200)
    assert reasons([text]) == ["too_long"]


def test_too_long_is_the_only_rule_a_long_clean_text_fails():
    assert reasons([TALE], cfg=QualityConfig(max_words=500)) == ["too_long"]
    assert reasons([TALE], cfg=QualityConfig(max_words=500, enabled=("too_long",))) == ["too_long"]


def test_char_repetition_share_keeps_a_separator_line_and_run_mode_is_the_seed_rule():
    run = QualityConfig(char_repetition_mode="run")
    assert reasons([TALE + "\n\n" + "=" * 10], cfg=run) == [None]
    assert reasons([TALE + "\n\n" + "=" * 11], cfg=run) == ["char_repetition"]
    # one 76-character rule line under 3,900 characters of prose: 2 % of the characters, kept by default
    assert reasons([TALE + "\n\n" + "=" * 76]) == [None]
    # the same prose with as many characters of rules as of text is over the 0.3 share
    ruled = "\n".join(line + "\n" + "-" * 60 for line in TALE.splitlines())
    assert reasons([ruled], cfg=QualityConfig(enabled=("char_repetition",))) == ["char_repetition"]
    indented = "\n".join(" " * 16 + line for line in TALE.splitlines())
    assert reasons([indented + "\n" * 12], cfg=run) == [None]  # whitespace runs are layout
    # a run of a non-ASCII character counts, and a run never continues into the next row
    only = QualityConfig(enabled=("char_repetition",))
    assert reasons(["─" * 200 + " " + "word " * 60, "x" * 6, "x" * 6], cfg=only) == ["char_repetition", None, None]


def test_non_ascii_ratio_is_gated_by_language():
    assert reasons([RUSSIAN, RUSSIAN, RUSSIAN], ["ru", "en", None]) == [None, "non_ascii_ratio", None]
    german = (
        "Die Bibliothek der Stadt wurde am Samstag nach achtzehn Monaten Bauzeit wieder "
        "eröffnet. Schon in der ersten Stunde kamen mehr als vierhundert Besucher, um die "
        "renovierten Räume, die neue Heizung und die große Kinderecke im Keller zu sehen. "
        "Die Öffnungszeiten bleiben unverändert: dienstags bis samstags, donnerstags länger. "
        "Für Schulklassen gibt es ab März wieder Führungen durch das Haus."
    )
    assert reasons([german], ["de"]) == [None]


def test_no_stop_words_applies_to_english_only():
    sheet = FAILING["no_stop_words"]
    assert reasons([sheet, sheet, sheet], ["en", "de", None]) == ["no_stop_words", None, None]


def test_first_failing_reason_wins():
    assert reasons(["WINNER!!!!!!!!!!!!!!!! Click now."]) == ["too_short"]
    assert reasons(["WINNER!!!!!!!!!!!!!!!! Click now."], cfg=without("too_short")) == ["char_repetition"]
    assert reasons(["WINNER!!!!!!!!!!!!!!!! " + TALE], cfg=QualityConfig(char_repetition_mode="run")) == [
        "char_repetition"]


def test_mixed_batch_and_input_types():
    texts = [TALE, None, FAILING["symbol_ratio"], FAILING["too_short"]]
    expected = [None, "empty", "symbol_ratio", "too_short"]
    chunked_text = pa.chunked_array([pa.array(texts[:2]), pa.array(texts[2:])], pa.string())
    chunked_lang = pa.chunked_array([pa.array(["en", "en"]), pa.array(["en", "en"])])
    assert drop_reasons(chunked_text, chunked_lang, QualityConfig()).to_pylist() == expected
    large = pa.array(texts, pa.large_string())
    out = drop_reasons(large, pa.array(["en"] * 4), QualityConfig())
    assert out.type == pa.string() and out.to_pylist() == expected


def test_empty_input():
    assert reasons([]) == []


def test_config_rejects_unknown_reason_and_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        QualityConfig(enabled=("empty", "too_shrot"))
    message = str(err.value)
    assert "too_shrot" in message
    assert all(name in message for name in REASONS)


def test_config_rejects_inverted_bounds_and_percentages():
    with pytest.raises(ValueError, match="min_words <= max_words"):
        QualityConfig(min_words=200, max_words=100)
    with pytest.raises(ValueError, match="fractions in"):
        QualityConfig(max_dup_line_frac=30)


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(TypeError, match="string array"):
        drop_reasons(pa.array([1, 2]), pa.array(["en", "en"]), QualityConfig())
    with pytest.raises(ValueError, match="equal length"):
        drop_reasons(pa.array(["a"]), pa.array(["en", "en"]), QualityConfig())


# ---- real corpora: the sample (in the project) and CCNet web documents (../shared/data) ----------------------------


def _sample_text():
    import pyarrow.parquet as pq
    from conftest import PARQUET

    from ray_jobs.steps.clean.normalize import NormalizeConfig, normalize_text

    table = pq.read_table(PARQUET, columns=["id", "text", "label"])
    return table, normalize_text(table["text"], NormalizeConfig()).combine_chunks()


def test_char_repetition_share_on_the_sample_keeps_mail_the_seed_rule_dropped():
    table, text = _sample_text()
    lang = pa.array(["en"] * len(text))

    def fails(**kw):
        return drop_reasons(text, lang, QualityConfig(enabled=("char_repetition",), **kw)).is_valid().to_numpy(
            zero_copy_only=False)

    seed, share = fails(char_repetition_mode="run"), fails()
    assert seed.sum() > 300  # the seed's rule: one run of 11 anywhere (322 of the 1,567 when measured)
    assert share.sum() < 10 and not (share & ~seed).any()  # a share drops a subset of what a run drops
    ham = np.array(table["label"].to_pylist()) == "ham"
    assert (seed & ham).sum() > 100 and (share & ham).sum() <= 1


def _reference_top_ngram(words: list[str], limits) -> bool:
    """The rule as Gopher words it, one document at a time: the most frequent n-gram (ties: the longest)."""
    total = sum(map(len, words))
    for n, limit in limits:
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        counts = Counter(grams)
        top = max(counts.values(), default=0)
        if top >= 2 and top * max(sum(map(len, g)) for g, c in counts.items() if c == top) > limit * total:
            return True
    return False


def _reference_dup_ngram_fracs(words: list[str], n: int) -> float:
    """Word characters covered by repeats of an n-gram seen earlier in the document, over all word characters."""
    seen, covered = set(), set()
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered.update(range(i, i + n))
        seen.add(gram)
    return sum(len(words[i]) for i in covered) / max(sum(map(len, words)), 1)


def test_vectorised_ngram_rules_agree_with_the_per_document_definition(shared_data):
    import gzip
    import json

    files = sorted((shared_data / "web_samples_dolma" / "multiple_files").glob("*.jsonl.gz"))
    if not files:
        pytest.skip("web_samples_dolma/multiple_files not in ../shared/data")
    web = [json.loads(line)["text"] for f in files for line in gzip.open(f, "rt")]
    _, sample = _sample_text()
    texts = web + sample.to_pylist()[:150]
    lang = pa.array(["en"] * len(texts))
    strict = (2, 0.05), (3, 0.04), (4, 0.03)  # tight limits, so that both outcomes occur
    cfg = QualityConfig(enabled=("top_ngram_repetition",), max_top_ngram_char_frac=strict)
    got = drop_reasons(pa.array(texts), lang, cfg).is_valid().to_pylist()
    assert got == [_reference_top_ngram(t.split(), strict) for t in texts] and 0 < sum(got) < len(texts)
    limits = ((5, 0.03), (8, 0.02))
    cfg = QualityConfig(enabled=("duplicate_ngrams",), max_dup_ngram_char_frac=limits)
    got = drop_reasons(pa.array(texts), lang, cfg).is_valid().to_pylist()
    want = [any(_reference_dup_ngram_fracs(t.split(), n) > f for n, f in limits) for t in texts]
    assert got == want and 0 < sum(got) < len(texts)
