"""The embedded summarization generator's pools: names, places, organisations, dates, the key
event phrasings (two per event, each with its headline summary) and the distractor sentences."""

CITIES = (
    "Springfield",
    "Riverton",
    "Lakewood",
    "Fairview",
    "Milton",
    "Ashford",
    "Brookside",
    "Clayton",
    "Dover",
    "Easton",
    "Franklin",
    "Georgetown",
    "Hampton",
    "Kingston",
    "Lincoln",
    "Marion",
    "Newport",
    "Oakdale",
    "Preston",
    "Salem",
    "Troy",
    "Vernon",
    "Weston",
    "Bristol",
    "Camden",
    "Denton",
)
SURNAMES = (
    "Harper",
    "Baxter",
    "Collins",
    "Dawson",
    "Ellis",
    "Foster",
    "Grant",
    "Hayes",
    "Jensen",
    "Keller",
    "Lawson",
    "Morgan",
    "Nolan",
    "Parker",
    "Reed",
    "Shaw",
    "Turner",
    "Walsh",
)
FIRST_NAMES = (
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Julia",
    "Kevin",
    "Laura",
    "Mark",
    "Nina",
    "Oscar",
    "Paula",
    "Sam",
    "Tina",
    "Victor",
)
ORG_KINDS = ("Foods", "Motors", "Energy", "Health", "Labs", "Books", "Steel", "Media")
FACILITIES = ("factory", "store", "library", "hospital", "school", "warehouse", "bakery", "clinic", "office", "stadium")
TEAMS = ("Bears", "Hawks", "Lions", "Wolves", "Eagles", "Tigers", "Sharks", "Foxes")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
CONTESTS = ("science", "music", "poetry", "chess", "math", "art")

# event -> (two phrasings of the key sentence, the summary form, range of {n})
EVENTS = {
    "open": (
        (
            "{org} opened a new {facility} in {city} on {day}, creating {n} jobs.",
            "On {day}, {org} opened a {facility} in {city} that will employ {n} people.",
        ),
        "{org} opens {facility} in {city}, {n} jobs",
        (20, 900),
    ),
    "close": (
        (
            "{org} said it will close its {facility} in {city}, cutting {n} jobs.",
            "{org} plans to shut its {city} {facility}, and {n} workers will lose their jobs.",
        ),
        "{org} to close {city} {facility}, {n} jobs cut",
        (20, 900),
    ),
    "election": (
        (
            "{person} won the race for mayor of {city} with {n} percent of the vote.",
            "Voters in {city} chose {person} as their new mayor with {n} percent of the vote.",
        ),
        "{person} elected mayor of {city} with {n} percent",
        (40, 80),
    ),
    "fire": (
        (
            "A fire broke out at a {facility} in {city} on {day}, and {n} people were moved to safety.",
            "{n} people had to leave their homes in {city} after a fire at a nearby {facility}.",
        ),
        "Fire at {city} {facility}, {n} people moved",
        (10, 400),
    ),
    "sports": (
        (
            "The {city} {team} beat the {city2} {team2} {n} to {m} on {day}.",
            "On {day}, the {city} {team} won {n} to {m} against the {city2} {team2}.",
        ),
        "{city} {team} beat {city2} {team2} {n} to {m}",
        (3, 9),
    ),
    "funding": (
        (
            "{org} raised {n} million dollars to build a new {facility} in {city}.",
            "A new {facility} in {city} will be built after {org} raised {n} million dollars.",
        ),
        "{org} raises {n} million for {city} {facility}",
        (2, 90),
    ),
    "fares": (
        (
            "Bus fares in {city} will rise by {n} percent starting in {month}.",
            "Starting in {month}, riders in {city} will pay {n} percent more for the bus.",
        ),
        "{city} bus fares up {n} percent from {month}",
        (3, 30),
    ),
    "snow": (
        (
            "{city} got {n} inches of snow on {day}, and all schools in the area closed.",
            "Schools in {city} closed on {day} after {n} inches of snow fell overnight.",
        ),
        "{n} inches of snow close {city} schools",
        (4, 30),
    ),
    "prize": (
        (
            "{person}, a student from {city}, won the state {contest} prize and {n} dollars.",
            "The state {contest} prize and {n} dollars went to {person}, a student from {city}.",
        ),
        "{city} student {person} wins state {contest} prize",
        (100, 900),
    ),
    "bridge": (
        (
            "The main bridge in {city} will close for {n} weeks from {month} for repairs.",
            "Repairs will close the {city} main bridge for {n} weeks starting in {month}.",
        ),
        "{city} bridge to close {n} weeks from {month}",
        (2, 12),
    ),
}
DISTRACTORS = (
    "Officials said more details would be shared next week.",
    "The weather in {city2} stayed mild, with a high of {n2} degrees.",
    "{person2}, a local resident, said the news came as a surprise.",
    "Last year the area saw about {n2} thousand visitors.",
    "A spokesperson for {org2} declined to comment.",
    "Many people in the area shared their views online.",
    "The city council will meet again on {day2}.",
    "Traffic on the main road was slow for most of the morning.",
    "{person2} has lived in {city2} for {n2} years.",
    "Local shops in {city2} reported a busy weekend.",
    "The report was first shared by a local paper.",
    "Some residents asked for more time to review the plans.",
    "A similar story made the news in {city2} {n2} years ago.",
    "Prices at the {city2} market were mostly unchanged.",
    "{person2} of {org2} said the company is doing well.",
    "The next update is expected in {month2}.",
)
