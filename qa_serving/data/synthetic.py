"""Synthetic SQuAD / KorQuAD-format data that a tiny model trained from scratch can learn.

Why: tests and smoke runs need QA data whose answers a 2-4 layer BERT trained from scratch can really
find, offline. Each paragraph states 4-7 facts about one generated entity (a company, a person, a city
or a river) with sentence templates; each question asks for one fact with a question template. The
question's relation words ("founded", "born on", "mayor") match a cue in the sentence holding the
answer, so the mapping is learnable from local context. Names combine syllables from a fixed set, so
held-out articles have unseen names made of familiar pieces.

Deliberate simplifications:
- one entity per paragraph; the other paragraphs of an article are about other entities (the article
  title is the first paragraph's entity);
- a paragraph states at most one fact per answer type (one person, one year, one place name...), and
  filler sentences (which make about a quarter of the contexts long enough to need several windows)
  hold no names, numbers or relation words: "Who ...?" has one candidate span;
- SQuAD v2 unanswerable questions either ask for an attribute the paragraph does not state (3 in 4)
  or ask for a stated attribute of an entity that is not in the paragraph (with ``plausible_answers``);
- Korean answers stop before the particle ("1923년에" -> "1923년"), as in KorQuAD: a WordPiece vocabulary
  that merges particles into pieces ("##년에") cannot express those spans, so Korean needs a tokenizer
  that splits them.

>>> data = generate_squad(2, seed=0)
>>> qa = data["data"][0]["paragraphs"][0]["qas"][0]
>>> context = data["data"][0]["paragraphs"][0]["context"]
>>> a = qa["answers"][0]; context[a["answer_start"]:][: len(a["text"])] == a["text"]
True
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any, Literal

from qa_serving.errors import QAError

__all__ = ["generate_squad", "write_squad"]

# ------------------------------------------------------------------------------------------- templates
# kind -> pronouns (for {S} after the first sentence), attrs: name -> (value type, sentences, questions),
# combos: sentences stating several attributes at once. {S} = subject (name or pronoun, sentence start),
# {E} = the entity's name, {attr} = the answer. Korean: {slot|은} appends the particle that fits the
# last syllable of the value (은/는, 이/가, 을/를, 과/와, 으로/로, 이다/다).

# fmt: off
_EN: dict[str, dict[str, Any]] = {
    "company": {
        "pronouns": ["It", "The company"],
        "attrs": {
            "founded_year": ("company_year", ["{S} was founded in {founded_year}.", "{S} was established in {founded_year}."],
                             ["When was {E} founded?", "In what year was {E} founded?", "In which year was {E} established?"]),
            "founder": ("person", ["{S} was founded by {founder}.", "The founder of {E} was {founder}."],
                        ["Who founded {E}?", "Who was the founder of {E}?", "Who established {E}?"]),
            "founding_city": ("city", ["{S} was founded in the city of {founding_city}.", "{S} started out in the city of {founding_city}."],
                              ["In which city was {E} founded?", "Where was {E} founded?"]),
            "headquarters": ("city", ["{S} is headquartered in {headquarters}.", "The headquarters of {E} are in {headquarters}."],
                             ["Where is {E} headquartered?", "In which city are the headquarters of {E}?"]),
            "employees": ("employees", ["{S} employs about {employees} people.", "{S} has roughly {employees} employees."],
                          ["How many people does {E} employ?", "How many employees does {E} have?"]),
            "ceo": ("person", ["{S} is led by chief executive {ceo}.", "The chief executive of {E} is {ceo}."],
                    ["Who is the chief executive of {E}?", "Who leads {E} as chief executive?"]),
            "industry": ("industry", ["{S} works mainly in {industry}.", "{S} is best known for its work in {industry}."],
                         ["In what industry does {E} work?", "What industry is {E} known for?"]),
            "revenue": ("money", ["{S} has an annual revenue of about {revenue}.", "The annual revenue of {E} is about {revenue}."],
                        ["What is the annual revenue of {E}?", "How much revenue does {E} earn each year?"]),
            "product": ("product", ["The best-selling product of {E} is the {product}.", "{S} sells more of the {product} than of anything else."],
                        ["What is the best-selling product of {E}?", "Which product of {E} sells best?"]),
        },
        "combos": [
            ("{S} was founded in {founded_year} by {founder} in the city of {founding_city}.", ("founded_year", "founder", "founding_city")),
            ("{S} was founded in {founded_year} by {founder}.", ("founded_year", "founder")),
            ("{S} was founded in the city of {founding_city} in {founded_year}.", ("founding_city", "founded_year")),
        ],
    },
    "person": {
        "pronouns": ["He", "She"],
        "attrs": {
            "birth_date": ("birth_date", ["{S} was born on {birth_date}.", "The date of birth of {E} is {birth_date}."],
                           ["When was {E} born?", "What is the date of birth of {E}?", "On what date was {E} born?"]),
            "birthplace": ("city", ["{S} was born in the city of {birthplace}.", "The birthplace of {E} is {birthplace}."],
                           ["Where was {E} born?", "In which city was {E} born?", "What is the birthplace of {E}?"]),
            "occupation": ("occupation", ["{S} worked as a {occupation}.", "{S} was a {occupation} by training."],
                           ["What was the profession of {E}?", "What did {E} work as?"]),
            "university": ("university", ["{S} studied at the {university}.", "{S} was educated at the {university}."],
                           ["Where did {E} study?", "Which university did {E} attend?"]),
            "spouse": ("person", ["{S} married {spouse}.", "{S} was married to {spouse}."],
                       ["Who did {E} marry?", "Who was the spouse of {E}?", "To whom was {E} married?"]),
            "award": ("award", ["{S} received the {award}.", "{S} was awarded the {award}."],
                      ["Which award did {E} receive?", "What prize was {E} awarded?"]),
            "death_year": ("death_year", ["{S} died in {death_year}.", "{S} passed away in {death_year}."],
                           ["When did {E} die?", "In what year did {E} die?"]),
            "mentor": ("person", ["{S} trained under {mentor}.", "{S} was a student of {mentor}."],
                       ["Under whom did {E} train?", "Who was the mentor of {E}?"]),
            "work": ("work", ["{S} is best remembered for {work}.", "The best-known work of {E} is {work}."],
                     ["What is {E} best remembered for?", "Which work is {E} best known for?"]),
        },
        "combos": [("{S} was born on {birth_date} in the city of {birthplace}.", ("birth_date", "birthplace"))],
    },
    "city": {
        "pronouns": ["It", "The city"],
        "attrs": {
            "country": ("country", ["{S} is a city in {country}.", "{S} lies in the north of {country}."],
                        ["In which country is {E}?", "What country is {E} located in?"]),
            "population": ("count", ["{S} has a population of {population}.", "About {population} people live in {E}."],
                           ["What is the population of {E}?", "How many people live in {E}?"]),
            "founded_year": ("city_year", ["{S} was founded in {founded_year}.", "{S} was first settled in {founded_year}."],
                             ["When was {E} founded?", "In what year was {E} first settled?"]),
            "mayor": ("person", ["The current mayor of {E} is {mayor}.", "{S} is governed by mayor {mayor}."],
                      ["Who is the mayor of {E}?", "Who governs {E} as mayor?"]),
            "river": ("river", ["{S} lies on the {river}.", "The {river} flows through {E}."],
                      ["On which river does {E} lie?", "Which river flows through {E}?"]),
            "elevation": ("elevation", ["{S} sits at an elevation of {elevation}.", "{S} lies {elevation} above sea level."],
                          ["What is the elevation of {E}?", "How high above sea level is {E}?"]),
            "airport": ("airport", ["{S} is served by {airport}.", "The nearest airport to {E} is {airport}."],
                        ["Which airport serves {E}?", "What is the nearest airport to {E}?"]),
            "industry": ("industry", ["The economy of {E} is based on {industry}.", "{S} is a centre of {industry}."],
                         ["What is the economy of {E} based on?", "What industry is {E} a centre of?"]),
            "university": ("university", ["{S} is home to the {university}.", "The {university} is located in {E}."],
                           ["Which university is located in {E}?", "Which university is {E} home to?"]),
        },
        "combos": [("{S} is a city in {country} with a population of {population}.", ("country", "population"))],
    },
    "river": {
        "pronouns": ["It", "The river"],
        "attrs": {
            "length": ("length", ["{S} is {length} long.", "The length of the {E} is {length}."],
                       ["How long is the {E}?", "What is the length of the {E}?"]),
            "source": ("mountains", ["{S} rises in the {source}.", "The source of the {E} lies in the {source}."],
                       ["Where does the {E} rise?", "Where is the source of the {E}?"]),
            "mouth": ("lake", ["{S} flows into {mouth}.", "{S} empties into {mouth}."],
                      ["Into which lake does the {E} flow?", "Where does the {E} empty?"]),
            "city": ("city", ["The largest city on the {E} is {city}.", "{S} passes through {city}, the largest city on its banks."],
                     ["What is the largest city on the {E}?", "Which is the largest city on the banks of the {E}?"]),
            "basin": ("area", ["The drainage basin of the {E} covers {basin}.", "{S} drains an area of {basin}."],
                      ["How large is the drainage basin of the {E}?", "What area does the {E} drain?"]),
            "discharge": ("discharge", ["{S} has an average discharge of {discharge}.", "The average discharge of the {E} is {discharge}."],
                          ["What is the average discharge of the {E}?", "How much water does the {E} discharge on average?"]),
            "tributary": ("river", ["The main tributary of the {E} is the {tributary}.", "{S} is joined by its main tributary, the {tributary}."],
                          ["What is the main tributary of the {E}?", "Which river is the main tributary of the {E}?"]),
            "explorer": ("person", ["{S} was first mapped by {explorer}.", "The explorer {explorer} was the first to map the {E}."],
                         ["Who first mapped the {E}?", "Who was the first to map the {E}?"]),
            "country": ("country", ["{S} flows through {country}.", "Most of the {E} lies within {country}."],
                        ["Which country does the {E} flow through?", "In which country does most of the {E} lie?"]),
        },
        "combos": [("{S} rises in the {source} and flows into {mouth}.", ("source", "mouth"))],
    },
}

_KO: dict[str, dict[str, Any]] = {
    "company": {
        "pronouns": ["이 회사"],
        "attrs": {
            "founded_year": ("company_year", ["{S|은} {founded_year}에 설립되었다.", "{S|은} {founded_year}에 창립되었다."],
                             ["{E|은} 언제 설립되었는가?", "{E|은} 몇 년에 설립되었나?", "{E|이} 창립된 해는 언제인가?"]),
            "founder": ("person", ["{E|을} 설립한 사람은 {founder|이다}.", "{E|의} 창업자는 {founder|이다}."],
                        ["{E|을} 설립한 사람은 누구인가?", "{E|의} 창업자는 누구인가?"]),
            "founding_city": ("city", ["{S|은} {founding_city}에서 설립되었다.", "{S|은} 처음에 {founding_city}에서 출발하였다."],
                              ["{E|은} 어느 도시에서 설립되었는가?", "{E|이} 처음 출발한 도시는 어디인가?"]),
            "headquarters": ("city", ["{E|의} 본사는 {headquarters}에 있다.", "{S|은} {headquarters}에 본사를 두고 있다."],
                             ["{E|의} 본사는 어디에 있는가?", "{E|은} 어느 도시에 본사를 두고 있는가?"]),
            "employees": ("employees", ["{S|은} 약 {employees|을} 고용하고 있다.", "{E|의} 직원 수는 약 {employees|이다}."],
                          ["{E|은} 몇 명을 고용하고 있는가?", "{E|의} 직원 수는 얼마인가?"]),
            "ceo": ("person", ["{E|의} 최고경영자는 {ceo|이다}.", "{S|은} 최고경영자 {ceo|이} 이끌고 있다."],
                    ["{E|의} 최고경영자는 누구인가?", "{E|을} 이끄는 최고경영자는 누구인가?"]),
            "industry": ("industry", ["{S|은} 주로 {industry} 분야에서 활동한다.", "{S|은} {industry} 분야로 잘 알려져 있다."],
                         ["{E|은} 어떤 분야에서 활동하는가?", "{E|은} 어느 분야로 알려져 있는가?"]),
            "revenue": ("money", ["{E|의} 연간 매출은 약 {revenue|이다}.", "{S|은} 해마다 약 {revenue|의} 매출을 올린다."],
                        ["{E|의} 연간 매출은 얼마인가?", "{E|은} 해마다 얼마의 매출을 올리는가?"]),
            "product": ("product", ["{E|의} 가장 많이 팔린 제품은 {product|이다}.", "{S|은} {product|으로} 가장 많은 판매를 기록하였다."],
                        ["{E|의} 가장 많이 팔린 제품은 무엇인가?", "{E|은} 어떤 제품으로 가장 많은 판매를 기록하였는가?"]),
        },
        "combos": [
            ("{S|은} {founded_year}에 {founder|이} {founding_city}에서 설립하였다.", ("founded_year", "founder", "founding_city")),
            ("{S|은} {founded_year}에 {founding_city}에서 설립되었다.", ("founded_year", "founding_city")),
        ],
    },
    "person": {
        "pronouns": ["그", "그녀"],
        "attrs": {
            "birth_date": ("birth_date", ["{S|은} {birth_date}에 태어났다.", "{E|의} 생년월일은 {birth_date|이다}."],
                           ["{E|은} 언제 태어났는가?", "{E|의} 생년월일은 언제인가?"]),
            "birthplace": ("city", ["{S|은} {birthplace}에서 태어났다.", "{E|의} 출생지는 {birthplace|이다}."],
                           ["{E|은} 어디에서 태어났는가?", "{E|의} 출생지는 어디인가?", "{E|이} 태어난 도시는 어디인가?"]),
            "occupation": ("occupation", ["{S|은} {occupation|으로} 일하였다.", "{E|의} 직업은 {occupation|이었다}."],
                           ["{E|의} 직업은 무엇이었는가?", "{E|은} 어떤 일을 하였는가?"]),
            "university": ("university", ["{S|은} {university}에서 공부하였다.", "{S|은} {university|을} 졸업하였다."],
                           ["{E|은} 어느 대학에서 공부하였는가?", "{E|이} 졸업한 대학은 어디인가?"]),
            "spouse": ("person", ["{S|은} {spouse|과} 결혼하였다.", "{E|의} 배우자는 {spouse|이다}."],
                       ["{E|은} 누구와 결혼하였는가?", "{E|의} 배우자는 누구인가?"]),
            "award": ("award", ["{S|은} {award|을} 받았다.", "{S|은} {award|의} 수상자이다."],
                      ["{E|은} 어떤 상을 받았는가?", "{E|이} 받은 상은 무엇인가?"]),
            "death_year": ("death_year", ["{S|은} {death_year}에 세상을 떠났다.", "{S|은} {death_year}에 사망하였다."],
                           ["{E|은} 언제 세상을 떠났는가?", "{E|은} 몇 년에 사망하였는가?"]),
            "mentor": ("person", ["{S|은} {mentor|의} 지도를 받았다.", "{E|의} 스승은 {mentor|이다}."],
                       ["{E|의} 스승은 누구인가?", "{E|은} 누구의 지도를 받았는가?"]),
            "work": ("work", ["{E|의} 대표작은 《{work}》이다.", "{S|은} 《{work}》로 가장 잘 기억된다."],
                     ["{E|의} 대표작은 무엇인가?", "{E|은} 어떤 작품으로 가장 잘 기억되는가?"]),
        },
        "combos": [("{S|은} {birth_date}에 {birthplace}에서 태어났다.", ("birth_date", "birthplace"))],
    },
    "city": {
        "pronouns": ["이 도시"],
        "attrs": {
            "country": ("country", ["{S|은} {country}에 있는 도시이다.", "{S|은} {country} 북부에 자리하고 있다."],
                        ["{E|은} 어느 나라에 있는가?", "{E|은} 어느 나라의 도시인가?"]),
            "population": ("count", ["{E|의} 인구는 약 {population|이다}.", "{E|에는} 약 {population|이} 살고 있다."],
                           ["{E|의} 인구는 얼마인가?", "{E|에는} 몇 명이 살고 있는가?"]),
            "founded_year": ("city_year", ["{S|은} {founded_year}에 세워졌다.", "{S|은} {founded_year}에 처음 건설되었다."],
                             ["{E|은} 언제 세워졌는가?", "{E|은} 몇 년에 처음 건설되었는가?"]),
            "mayor": ("person", ["현재 {E|의} 시장은 {mayor|이다}.", "{S|은} {mayor} 시장이 이끌고 있다."],
                      ["{E|의} 시장은 누구인가?", "{E|을} 이끄는 시장은 누구인가?"]),
            "river": ("river", ["{S|은} {river} 유역에 자리하고 있다.", "{river|이} {E|을} 가로질러 흐른다."],
                      ["{E|은} 어느 강 유역에 있는가?", "{E|을} 가로질러 흐르는 강은 무엇인가?"]),
            "elevation": ("elevation", ["{S|은} 해발 {elevation} 높이에 있다.", "{E|의} 해발 고도는 {elevation|이다}."],
                          ["{E|은} 해발 몇 미터에 있는가?", "{E|의} 해발 고도는 얼마인가?"]),
            "airport": ("airport", ["{E|에는} {airport|이} 있다.", "{E|에서} 가장 가까운 공항은 {airport|이다}."],
                        ["{E|에} 있는 공항은 무엇인가?", "{E|에서} 가장 가까운 공항은 어디인가?"]),
            "industry": ("industry", ["{E|의} 경제는 {industry}에 기반을 두고 있다.", "{S|은} {industry|의} 중심지이다."],
                         ["{E|의} 경제는 무엇에 기반을 두고 있는가?", "{E|은} 어떤 산업의 중심지인가?"]),
            "university": ("university", ["{E|에는} {university|이} 있다.", "{university|은} {E|에} 자리하고 있다."],
                           ["{E|에} 있는 대학은 어디인가?", "{E|에} 자리한 대학은 어디인가?"]),
        },
        "combos": [("{S|은} 인구 약 {population|의} {country} 도시이다.", ("population", "country"))],
    },
    "river": {
        "pronouns": ["이 강"],
        "attrs": {
            "length": ("length", ["{E|의} 길이는 {length|이다}.", "{S|은} 총길이가 {length|이다}."],
                       ["{E|의} 길이는 얼마인가?", "{E|은} 총길이가 얼마인가?"]),
            "source": ("mountains", ["{S|은} {source}에서 발원한다.", "{E|의} 발원지는 {source|이다}."],
                       ["{E|은} 어디에서 발원하는가?", "{E|의} 발원지는 어디인가?"]),
            "mouth": ("lake", ["{S|은} {mouth|으로} 흘러든다.", "{E|의} 하구는 {mouth|이다}."],
                      ["{E|은} 어디로 흘러드는가?", "{E|의} 하구는 어디인가?"]),
            "city": ("city", ["{E} 강변의 가장 큰 도시는 {city|이다}.", "{S|은} 강변 최대 도시인 {city|을} 지난다."],
                     ["{E} 강변에서 가장 큰 도시는 어디인가?", "{E|이} 지나는 강변 최대 도시는 어디인가?"]),
            "basin": ("area", ["{E|의} 유역 면적은 {basin|이다}.", "{S|은} {basin|의} 유역을 가진다."],
                      ["{E|의} 유역 면적은 얼마인가?", "{E|의} 유역은 얼마나 넓은가?"]),
            "discharge": ("discharge", ["{E|의} 평균 유량은 {discharge|이다}.", "{S|은} 평균 {discharge|의} 물을 흘려보낸다."],
                          ["{E|의} 평균 유량은 얼마인가?", "{E|은} 평균 얼마의 물을 흘려보내는가?"]),
            "tributary": ("river", ["{E|의} 주요 지류는 {tributary|이다}.", "{S|은} 주요 지류인 {tributary|과} 합류한다."],
                          ["{E|의} 주요 지류는 무엇인가?", "{E|과} 합류하는 주요 지류는 무엇인가?"]),
            "explorer": ("person", ["{E|을} 처음 탐사한 사람은 {explorer|이다}.", "탐험가 {explorer|이} {E|을} 처음 탐사하였다."],
                         ["{E|을} 처음 탐사한 사람은 누구인가?", "{E|을} 처음 탐사한 탐험가는 누구인가?"]),
            "country": ("country", ["{S|은} {country|을} 가로질러 흐른다.", "{E|의} 대부분은 {country} 영토에 있다."],
                        ["{E|은} 어느 나라를 가로질러 흐르는가?", "{E|의} 대부분은 어느 나라에 있는가?"]),
        },
        "combos": [("{S|은} {source}에서 발원하여 {mouth|으로} 흘러든다.", ("source", "mouth"))],
    },
}

# Filler sentences pad some contexts to several windows. They hold no name, number or date, so within
# a paragraph the answer's type (a person, a year, a city...) still points at one fact: that keeps the
# task learnable for a tiny model in a few minutes while the contexts look like prose.
_FILLER = {
    "en": [
        "The surrounding region is known for its {adj} hills and long, quiet valleys.",
        "Local historians have written a great deal about its early years.",
        "A small museum nearby collects old maps, letters and photographs.",
        "The region has a mild climate with wet winters and dry summers.",
        "Its name is thought to come from an old word for {noun}.",
        "Visitors often remark on the {adj} light of the late afternoon.",
        "Several buildings from the early period still stand nearby.",
        "Newspapers of the time reported on it only rarely.",
        "Many people in the area still speak a dialect of their own.",
        "Plans for a new bridge were discussed but never carried out.",
        "Its archives hold letters exchanged over several decades.",
        "A footpath links the old market with the surrounding fields.",
        "Early maps show only a handful of houses in the area.",
        "Severe floods once led to new embankments along the lower fields.",
        "A weekly market is still held in the old square.",
        "The local cuisine is known for dishes made with {noun} and smoked fish.",
        "Painters have long been drawn to the {adj} colours of the landscape.",
        "Little is known about the earliest inhabitants of the area.",
        "Scholars still disagree about several details of its history.",
        "Much of the surrounding land is used for farming and grazing.",
    ],
    "ko": [
        "주변 지역은 {adj} 언덕과 길고 고요한 골짜기로 알려져 있다.",
        "향토사학자들은 그 초기 역사에 대해 많은 글을 남겼다.",
        "근처의 작은 박물관에는 옛 지도와 편지, 사진이 모여 있다.",
        "이 지역은 겨울에 비가 많고 여름은 건조한 온화한 기후를 보인다.",
        "그 이름은 {noun|을} 뜻하는 옛말에서 왔다고 전해진다.",
        "방문객들은 늦은 오후의 {adj} 빛에 대해 자주 이야기한다.",
        "초기에 지어진 건물 몇 채가 지금도 근처에 남아 있다.",
        "당시의 신문은 이에 대해 거의 보도하지 않았다.",
        "이 일대의 많은 사람들은 아직도 고유한 사투리를 쓴다.",
        "새 다리를 놓자는 계획이 논의되었지만 실행되지는 않았다.",
        "기록보관소에는 수십 년 동안 주고받은 편지가 보관되어 있다.",
        "산책로 하나가 옛 시장과 주변 들판을 잇는다.",
        "초기 지도에는 이 일대에 집이 몇 채밖에 나오지 않는다.",
        "큰 홍수가 난 뒤 아래쪽 들판을 따라 새 제방이 쌓였다.",
        "옛 광장에서는 지금도 일주일에 한 번 장이 선다.",
        "이 지역의 음식은 {noun|과} 민물고기로 만든 요리로 유명하다.",
        "화가들은 오래전부터 이곳 풍경의 {adj} 색채에 끌렸다.",
        "이 지역의 첫 주민들에 대해서는 알려진 것이 거의 없다.",
        "학자들은 그 역사의 몇 가지 세부 사항을 두고 아직도 의견이 갈린다.",
        "주변 땅의 대부분은 농사와 방목에 쓰인다.",
    ],
}

# ----------------------------------------------------------------------------------------------- words

# Names are 1-3 syllables from a fixed set of about 300: held-out names are new combinations of pieces
# a tokenizer trained on the training data has seen, like real names (unbounded letter strings would
# tokenize into arbitrary fragments and invite memorising names instead of reading the context).
_ONSETS = ["b", "d", "g", "k", "l", "m", "n", "r", "s", "t", "v", "z", "br", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "n", "r", "l"]
_EN_WORDS = {
    "first_end": ["a", "o", "en", "ia", "us", "el", "", ""],
    "last_end": ["son", "ec", "ov", "holt", "berg", "ez", "ini", "ard", "ley", "", ""],
    "city_end": ["a", "ton", "burg", "ford", "mere", "ia", "is", "", "", ""],
    "country_end": ["ia", "land", "ora", "ea", "istan"],
    "company_end": ["Industries", "Holdings", "Group", "Works", "Systems", "Shipping", "Motors", "Textiles", "Bank", "Foods"],
    "occupation": ["chemist", "novelist", "composer", "painter", "physician", "cartographer", "botanist", "surgeon",
                   "sculptor", "journalist", "linguist", "mathematician", "geologist", "playwright", "diplomat"],
    "industry": ["shipbuilding", "textiles", "pharmaceuticals", "steel", "software", "railway equipment", "glassmaking",
                 "brewing", "insurance", "printing", "fishing", "timber", "tourism", "mining"],
    "adj": ["Silent", "Northern", "Broken", "Golden", "Quiet", "Hidden", "Distant", "Iron", "Glass", "Winter", "Last", "Red"],
    "noun": ["Harbour", "Garden", "Bridge", "Lantern", "Orchard", "Tower", "Meadow", "Voyage", "Archive", "Mirror", "Clock"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"],
    "filler_noun": ["salt", "marsh", "oak", "ford", "hill", "stone", "mist", "pasture", "barley", "honey"],
    "filler_adj": ["golden", "soft", "pale", "warm", "silver", "green", "misty"],
}
_KO_SYLL = list("바른홀트모라베크엘레나사카린도미세로타노벨하아르테시온루가즈펠덴키소마비리드케스렐파우") + ["벤", "츠", "글", "렌"]
_KO_SURNAMES = list("김이박최정강조윤장임한오서신권황안송류홍")
_KO_GIVEN = list("민준서연지우현수영호진은하윤재성경희태석혜미동훈예주원정상철")
_KO_WORDS = {
    "company_end": ["산업", "전자", "건설", "제약", "해운", "은행", "화학", "중공업", "식품", "통신"],
    "occupation": ["화학자", "소설가", "작곡가", "화가", "의사", "지도 제작자", "식물학자", "외과 의사", "조각가", "기자",
                   "언어학자", "수학자", "지질학자", "극작가", "외교관"],
    "industry": ["조선업", "섬유 산업", "제약", "철강", "소프트웨어", "철도 장비", "유리 공예", "양조업", "보험", "인쇄업",
                 "수산업", "목재 산업", "관광업", "광업"],
    "adj": ["고요한", "북쪽의", "부서진", "황금빛", "숨겨진", "머나먼", "겨울의", "마지막", "붉은"],
    "noun": ["항구", "정원", "다리", "등불", "과수원", "탑", "초원", "항해", "기록", "거울", "시계"],
    "filler_noun": ["소금", "늪", "참나무", "여울", "언덕", "돌", "안개", "목초지", "보리", "꿀"],
    "filler_adj": ["금빛", "부드러운", "옅은", "따뜻한", "은빛", "푸른", "안개 낀"],
}
# fmt: on


class _Namer:
    """Random names and values; one ``random.Random`` so output is deterministic for a seed."""

    def __init__(self, rng: random.Random, lang: str) -> None:
        self.rng, self.lang = rng, lang
        self._birth_year = 1900

    def _en_word(self, n_syll: int) -> str:
        r = self.rng
        word = "".join(r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS) for _ in range(n_syll))
        return word.capitalize()

    def _ko_word(self, lo: int = 2, hi: int = 3) -> str:
        return "".join(self.rng.choice(_KO_SYLL) for _ in range(self.rng.randint(lo, hi)))

    def word(self) -> str:
        """A fresh name stem: ``Varnholt`` / ``바른홀트``."""
        if self.lang == "ko":
            return self._ko_word()
        return self._en_word(self.rng.randint(2, 3))

    def person(self) -> str:
        r = self.rng
        if self.lang == "ko":
            if r.random() < 0.5:
                return r.choice(_KO_SURNAMES) + r.choice(_KO_GIVEN) + r.choice(_KO_GIVEN)
            return f"{self._ko_word(2, 3)} {self._ko_word(2, 4)}"
        first = self._en_word(r.randint(1, 2)) + r.choice(_EN_WORDS["first_end"])
        last = self._en_word(2) + r.choice(_EN_WORDS["last_end"])
        return f"{first} {last}"

    def entity(self, kind: str) -> str:
        """An entity name of ``kind``: ``Varnholt Industries``, ``Tressa``, ``Orvel River``."""
        r, ko = self.rng, self.lang == "ko"
        if kind == "person":
            return self.person()
        if kind == "company":
            return f"{self.word()} {r.choice((_KO_WORDS if ko else _EN_WORDS)['company_end'])}"
        if kind == "river":
            return self.word() + "강" if ko else f"{self.word()} River"
        return self.city()

    def city(self) -> str:
        if self.lang == "ko":
            return self._ko_word()
        return self._en_word(2) + self.rng.choice(_EN_WORDS["city_end"])

    def year(self, lo: int, hi: int) -> str:
        y = self.rng.randint(lo, hi)
        return f"{y}년" if self.lang == "ko" else str(y)

    def value(self, vtype: str) -> str:
        """One answer value of type ``vtype`` (see the template tables)."""
        r, ko = self.rng, self.lang == "ko"
        words = _KO_WORDS if ko else _EN_WORDS
        if vtype == "person":
            return self.person()
        if vtype == "city":
            return self.city()
        if vtype == "country":
            if ko:
                return self._ko_word() + r.choice(["", "", " 공화국", " 왕국"])
            return self._en_word(r.randint(1, 2)) + r.choice(_EN_WORDS["country_end"])
        if vtype == "company_year":
            return self.year(1820, 2010)
        if vtype == "city_year":
            return self.year(900, 1890)
        if vtype == "birth_date":
            y, m, d = r.randint(1800, 1960), r.randint(1, 12), r.randint(1, 28)
            self._birth_year = y
            return f"{y}년 {m}월 {d}일" if ko else f"{d} {_EN_WORDS['month'][m - 1]} {y}"
        if vtype == "death_year":
            return self.year(self._birth_year + 40, self._birth_year + 95)
        if vtype == "count":
            n = r.choice([r.randint(120, 9_999), r.randint(10_000, 999_999), r.randint(1_000_000, 3_000_000)])
            return f"{n:,}명" if ko else f"{n:,}"
        if vtype == "employees":
            n = r.choice([r.randint(40, 999), r.randint(1_000, 90_000)])
            return f"{n:,}명" if ko else f"{n:,}"
        if vtype == "money":
            n = r.randint(12, 9_800)
            return f"{n:,}억 원" if ko else f"{n:,} million dollars"
        if vtype in ("occupation", "industry"):
            return r.choice(words[vtype])
        if vtype == "university":
            if ko:
                return f"{self.city()}대학교"
            return r.choice([f"University of {self.city()}", f"{self._en_word(2)} Institute of Technology"])
        if vtype == "award":
            return f"{self._ko_word()}상" if ko else f"{self._en_word(2)} {r.choice(['Prize', 'Medal'])}"
        if vtype == "work":
            return (
                f"{r.choice(words['adj'])} {r.choice(words['noun'])}"
                if ko
                else (f"The {r.choice(words['adj'])} {r.choice(words['noun'])}")
            )
        if vtype == "product":
            return (
                f"{self._ko_word(2, 3)} {r.randint(2, 99) * 10}호"
                if ko
                else f"{self._en_word(2)} {r.randint(2, 99) * 10}"
            )
        if vtype == "river":
            return self.word() + "강" if ko else f"{self.word()} River"
        if vtype == "mountains":
            return self._ko_word(2, 2) + "산맥" if ko else f"{self._en_word(2)} Mountains"
        if vtype == "lake":
            return self._ko_word(2, 2) + "호" if ko else f"Lake {self._en_word(2)}"
        if vtype == "airport":
            return f"{self._ko_word(2, 2)} 국제공항" if ko else f"{self._en_word(2)} International Airport"
        if vtype == "length":
            n = r.randint(40, 3_200)
            return f"{n:,}킬로미터" if ko else f"{n:,} kilometres"
        if vtype == "area":
            n = r.randint(800, 900_000)
            return f"{n:,}제곱킬로미터" if ko else f"{n:,} square kilometres"
        if vtype == "discharge":
            n = r.randint(15, 9_000)
            return f"초당 {n:,}세제곱미터" if ko else f"{n:,} cubic metres per second"
        if vtype == "elevation":
            n = r.randint(3, 2_800)
            return f"{n:,}미터" if ko else f"{n:,} metres"
        raise KeyError(vtype)

    def filler_values(self) -> dict[str, str]:
        words = _KO_WORDS if self.lang == "ko" else _EN_WORDS
        return {"noun": self.rng.choice(words["filler_noun"]), "adj": self.rng.choice(words["filler_adj"])}


# Value types a reader could confuse with each other (both are place names, both hold a year).
_TYPE_GROUP = {
    "city": "place",
    "country": "place",
    "company_year": "year",
    "city_year": "year",
    "birth_date": "year",
    "death_year": "year",
}

# ---------------------------------------------------------------------------------------------- render

_SLOT = re.compile(r"\{(\w+)(?:\|(\w+))?\}")
# particle -> (after a final consonant, after a vowel)
# fmt: off
_PARTICLES = {
    "은": ("은", "는"), "이": ("이", "가"), "을": ("을", "를"), "과": ("과", "와"),
    "으로": ("으로", "로"), "이다": ("이다", "다"), "이었다": ("이었다", "였다"),
}
# fmt: on
_DIGIT_FINAL = {"0": 21, "1": 8, "3": 16, "6": 1, "7": 8, "8": 8}  # 영 일 삼 육 칠 팔: their final consonant


def _final_consonant(word: str) -> int:
    """Index of the last syllable's final consonant (0 = none, 8 = ㄹ): ``_final_consonant("강") == 21``."""
    ch = word.rstrip()[-1:]
    if "가" <= ch <= "힣":
        return (ord(ch) - 0xAC00) % 28
    return _DIGIT_FINAL.get(ch, 0)


def _particle(word: str, particle: str) -> str:
    """The particle that fits ``word``: ``_particle("서울", "으로") == "로"``, ``_particle("회사", "은") == "는"``."""
    if particle not in _PARTICLES:
        return particle  # invariant ones: 의, 에, 에서, 에는
    final = _final_consonant(word)
    with_final, without = _PARTICLES[particle]
    if particle == "으로" and final == 8:
        return without
    return with_final if final else without


def _render(template: str, values: dict[str, str]) -> tuple[str, dict[str, int]]:
    """Fill ``template``; return the text and the character offset of each slot's value."""
    parts: list[str] = []
    starts: dict[str, int] = {}
    pos = length = 0
    for m in _SLOT.finditer(template):
        parts.append(template[pos : m.start()])
        length += m.start() - pos
        value = values[m.group(1)]
        starts[m.group(1)] = length
        suffix = _particle(value, m.group(2)) if m.group(2) else ""
        parts.append(value + suffix)
        length += len(value) + len(suffix)
        pos = m.end()
    parts.append(template[pos:])
    return "".join(parts), starts


# -------------------------------------------------------------------------------------------- generate


def _paragraph(
    rng: random.Random, namer: _Namer, spec: dict[str, Any], lang: str, kind: str, name: str, long: bool
) -> tuple[str, dict[str, tuple[str, int]], list[str]]:
    """A context about ``name``: (text, stated attr -> (answer, start), unstated attrs)."""
    attrs: dict[str, tuple[str, list[str], list[str]]] = spec["attrs"]
    values = {a: namer.value(vtype) for a, (vtype, _, _) in attrs.items()}
    # At most one fact per answer type (one person, one year, one place...): "Who ...?" then points at
    # one span, the cue a small model learns first; the relation words tell the rest apart.
    stated, groups = [], set()
    for attr in rng.sample(sorted(attrs), len(attrs)):
        group = _TYPE_GROUP.get(attrs[attr][0], attrs[attr][0])
        if group not in groups:
            stated.append(attr)
            groups.add(group)
    stated = stated[: rng.randint(4, min(7, len(stated)))]
    pending = set(stated)
    units: list[tuple[str, tuple[str, ...]]] = []
    for attr in stated:
        if attr not in pending:
            continue
        combos = [c for c in spec["combos"] if attr in c[1] and set(c[1]) <= pending]
        if combos and rng.random() < 0.4:
            template, covered = rng.choice(combos)
        else:
            template, covered = rng.choice(attrs[attr][1]), (attr,)
        pending -= set(covered)
        units.append((template, covered))
    rng.shuffle(units)
    n_filler = rng.randint(14, 24) if long else rng.choice([0, 0, 1, 2])
    fillers = rng.sample(_FILLER[lang], len(_FILLER[lang]))  # few repeats even in long contexts
    for i in range(n_filler):
        units.insert(rng.randint(1, len(units)), (fillers[i % len(fillers)], ()))

    pronoun = rng.choice(spec["pronouns"])
    display = f"The {name}" if kind == "river" and lang == "en" else name
    sentences: list[str] = []
    answers: dict[str, tuple[str, int]] = {}
    offset = 0
    for i, (template, covered) in enumerate(units):
        slot_values = {**values, "E": name, "S": display if i == 0 or rng.random() < 0.5 else pronoun}
        if not covered:
            slot_values.update(namer.filler_values())
        text, starts = _render(template, slot_values)
        for attr in covered:
            answers[attr] = (values[attr], offset + starts[attr])
        sentences.append(text)
        offset += len(text) + 1
    unstated = sorted(set(attrs) - set(stated))
    return " ".join(sentences), answers, unstated


def generate_squad(
    n_articles: int,
    *,
    paragraphs_per_article: int = 3,
    lang: Literal["en", "ko"] = "en",
    version_2: bool = False,
    unanswerable_fraction: float = 0.33,
    seed: int = 0,
) -> dict[str, Any]:
    """Official nested SQuAD JSON (``{"version", "data"}``) of generated articles.

    ``version_2`` adds unanswerable questions (``is_impossible: true``, ``answers: []``) for about
    ``unanswerable_fraction`` of the questions. ``lang="ko"`` writes KorQuAD-style Korean (answers such as
    ``"1923년"``, without the particle that follows). Same arguments, same output; ids are unique and
    include the seed, so sets generated with different seeds can be merged.
    """
    if not isinstance(n_articles, int) or n_articles < 1:
        raise QAError(f"n_articles must be a positive integer, got {n_articles!r}")
    if not isinstance(paragraphs_per_article, int) or paragraphs_per_article < 1:
        raise QAError(f"paragraphs_per_article must be a positive integer, got {paragraphs_per_article!r}")
    if lang not in ("en", "ko"):
        raise QAError(f"lang must be 'en' or 'ko', got {lang!r}")
    if not 0.0 <= unanswerable_fraction <= 1.0:
        raise QAError(f"unanswerable_fraction must be between 0 and 1, got {unanswerable_fraction!r}")

    rng = random.Random(seed)
    namer = _Namer(rng, lang)
    tables = _KO if lang == "ko" else _EN
    kinds = sorted(tables)
    used: set[str] = set()

    def fresh(kind: str) -> str:
        name = namer.entity(kind)
        while name in used:
            name = namer.entity(kind)
        used.add(name)
        return name

    data = []
    for a in range(n_articles):
        paragraphs = []
        title = ""
        for p in range(paragraphs_per_article):
            kind = rng.choice(kinds)
            spec = tables[kind]
            name = fresh(kind)
            title = title or name
            context, answers, unstated = _paragraph(rng, namer, spec, lang, kind, name, rng.random() < 0.25)
            n_q = rng.randint(3, 5)
            n_unans = sum(rng.random() < unanswerable_fraction for _ in range(n_q)) if version_2 else 0
            asked = rng.sample(sorted(answers), min(n_q - n_unans, len(answers)))
            qas: list[dict[str, Any]] = []
            for attr in asked:
                text, start = answers[attr]
                question = _render(rng.choice(spec["attrs"][attr][2]), {"E": name})[0]
                qas.append({"question": question, "answers": [{"text": text, "answer_start": start}]})
            missing = rng.sample(unstated, len(unstated))
            for _ in range(n_unans):
                qa: dict[str, Any]
                if missing and rng.random() < 0.75:  # an attribute the paragraph does not state
                    attr = missing.pop()
                    qa = {"question": _render(rng.choice(spec["attrs"][attr][2]), {"E": name})[0]}
                else:  # a stated attribute of an entity that is not in the paragraph
                    attr = rng.choice(sorted(answers))
                    other = fresh(kind)
                    text, start = answers[attr]
                    qa = {
                        "question": _render(rng.choice(spec["attrs"][attr][2]), {"E": other})[0],
                        "plausible_answers": [{"text": text, "answer_start": start}],
                    }
                qas.append({**qa, "answers": [], "is_impossible": True})
            rng.shuffle(qas)
            for q, qa in enumerate(qas):
                key = f"{lang}-{int(version_2)}-{seed}-{a}-{p}-{q}"
                qa["id"] = hashlib.md5(key.encode()).hexdigest()[:24]
                if version_2:
                    qa.setdefault("is_impossible", False)
            paragraphs.append({"context": context, "qas": [_ordered(qa) for qa in qas]})
        data.append({"title": title, "paragraphs": paragraphs})
    version = "v2.0" if version_2 else ("KorQuAD_v1.0_synthetic" if lang == "ko" else "1.1")
    return {"version": version, "data": data}


def _ordered(qa: dict[str, Any]) -> dict[str, Any]:
    """Keys in the official order, for readable files."""
    keys = ("id", "question", "answers", "is_impossible", "plausible_answers")
    return {k: qa[k] for k in keys if k in qa}


def write_squad(path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`generate_squad` ``(**kwargs)`` as UTF-8 JSON; returns the path.

    >>> write_squad(tmp / "train.json", n_articles=200, seed=0)  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(generate_squad(**kwargs), ensure_ascii=False, indent=1), encoding="utf-8")
    return path
