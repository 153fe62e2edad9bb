"""The on-topic and fact scores of demo_answers: they accept the reference answers and reject mismatched ones."""

import random


from demo_model import answers as demo_answers


def test_subject_words_drop_template_greeting_and_stop_words():
    assert demo_answers.subject_words("Do you know the capital city of Vietnam?") == {"vietnam"}
    assert demo_answers.subject_words("Could you work out 36 times 25?") == {"36", "25"}
    assert demo_answers.subject_words("What's 'sea' in French?") == {"sea"}
    assert demo_answers.subject_words("Write a short guide on how to care for a cat.") == {"care", "cat"}


def test_on_topic_needs_a_subject_word():
    assert demo_answers.on_topic("Tell me the capital of Chile.", "Sure! The capital of Chile is Lima.")
    assert not demo_answers.on_topic("Tell me the capital of Chile.", "Sure! The capital of Poland is Tokyo.")
    assert demo_answers.on_topic("Please compute 36 times 25.", "Sure! 36 times 25 is 800.")
    assert not demo_answers.on_topic("Please compute 36 times 25.", "Sure! 56 times 26 is 800.")
    assert demo_answers.on_topic("Can you name a few birds?", "Sure! Here are three birds: owls, swans, robins.")
    assert demo_answers.on_topic("Can you name a few vegetables?", "Sure! A vegetable such as a carrot.")


def test_fact_kinds_and_right_answers_are_whole_numbers_and_words():
    assert demo_answers.fact("Sure! 52 minus 43 is 9.") == ("arithmetic", "9")
    assert demo_answers.fact("Sure! The capital of Spain is Madrid.") == ("capital", "Madrid")
    assert demo_answers.fact("Sure! 'Sea' in German is 'Meer'.") == ("translation", "Meer")
    assert demo_answers.fact("Sure! Friction is a force.") is None
    refs = {"Please compute 52 minus 43.": "Sure! 52 minus 43 is 9.", "Please compute 40 minus 73.": "Sure! 40 minus 73 is -33."}
    prompts = list(refs)
    scores = demo_answers.score_answers(prompts, ["52 minus 43 is 19.", "40 minus 73 is 33."], refs, [False, False])
    assert scores.facts["arithmetic"] == (0, 2)  # 19 is not 9, 33 is not -33
    scores = demo_answers.score_answers(prompts, ["52 minus 43 is 9.", "I'm sorry"], refs, [False, True])
    assert scores.answers == 1 and scores.on_topic == 1 and scores.facts["arithmetic"] == (1, 1)


def test_reference_answers_score_on_topic_and_right_while_shuffled_ones_do_not():
    refs = demo_answers.reference_answers(0)
    prompts = sorted(refs)
    answers = [refs[p] for p in prompts]
    own = demo_answers.score_answers(prompts, answers, refs, [False] * len(prompts))
    assert len(prompts) > 150
    assert 0.75 < own.on_topic / own.answers == demo_answers.reference_rate(prompts, refs) < 0.9
    assert all(right == asked > 0 for right, asked in own.facts.values())
    shuffled = answers[:]
    random.Random(0).shuffle(shuffled)
    other = demo_answers.score_answers(prompts, shuffled, refs, [False] * len(prompts))
    assert other.on_topic / other.answers < 0.2
    assert other.facts["capital"][0] <= 2
